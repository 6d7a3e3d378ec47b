"""After every unit is done: drop dataset-wide duplicates, clear stale files, and write
`manifest.json`, `stats.json` and the card, all derived from what is on disk."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from pipeline import __version__
from pipeline.config import PipelineConfig
from pipeline.dedup import find_duplicates
from pipeline.plan import Unit
from pipeline.runner import UnitRunner, marker_path, reject_row
from schemas import SCHEMA_VERSION
from sharding.atomic import write_bytes, write_json, write_jsonl
from sharding.card import CardAssets, card_assets, render_card
from sharding.reader import iter_samples
from sharding.stats import build_stats, read_records, read_rejects, teacher_totals
from sharding.writer import write_unit_shards

log = logging.getLogger("twig")


def plan_digest(units: list[Unit]) -> str:
    return hashlib.sha256(json.dumps([u.digest for u in units]).encode()).hexdigest()


def load_marker(root: Path, unit: Unit) -> dict:
    return json.loads(marker_path(root, unit.id).read_text())


def _apply_drops(runner: UnitRunner, unit: Unit, marker: dict, drops: dict[str, str]) -> dict:
    """Rewrite a unit's shards without the dropped keys; add their reject lines; update the marker."""
    root = runner.root
    if not set(marker["dropped"]) <= set(drops):  # shards already lack a record we now keep
        marker = runner.run(unit)
    samples = [s for shard in marker["shards"] for s in iter_samples(root / shard["path"])
               if s["__key__"] not in drops]
    for shard in marker["shards"]:
        (root / shard["path"]).unlink(missing_ok=True)
    shards = write_unit_shards(root, unit.id, unit.split, samples, runner.config.shard.max_bytes)
    rows = [json.loads(x) for x in (root / "rejects" / f"{unit.id}.jsonl").read_text().splitlines() if x]
    rows = [r for r in rows if r["reason"].split(" ", 1)[0] not in ("duplicate_prompt", "near_duplicate_image")]
    rows += [reject_row(r["key"], r["uri"], unit.split, "filter", drops[r["key"]])
             for r in marker["records"] if r["key"] in drops]
    write_jsonl(root / "rejects" / f"{unit.id}.jsonl", rows)
    marker = {**marker, "shards": [s.as_dict() for s in shards], "rejects": len(rows),
              "dropped": sorted(drops)}
    write_json(marker_path(root, unit.id), marker, indent=None)
    return marker


def _clear_stale(root: Path, units: list[Unit], markers: dict[str, dict]) -> None:
    keep_shards = {s["path"] for m in markers.values() for s in m["shards"]}
    ids = {u.id for u in units}
    for p in (root / "shards").glob("*"):
        if f"shards/{p.name}" not in keep_shards:
            p.unlink()
    for p in (root / "rejects").glob("*"):
        if p.name.removesuffix(".jsonl") not in ids:
            p.unlink()
    for p in (root / ".progress").glob("*"):
        if p.name.removesuffix(".json") not in ids:
            p.unlink()
    for p in root.glob(".*.tmp-*"):
        p.unlink()


def finalize(runner: UnitRunner, units: list[Unit]) -> dict:
    config: PipelineConfig = runner.config
    root = runner.root
    markers = {u.id: load_marker(root, u) for u in units}
    if config.until == "filter":
        ordered = [r for u in units for r in markers[u.id]["records"]]
        drops = find_duplicates(ordered, prompts=config.filter.dedup_prompts,
                                max_hamming=config.filter.near_dup_hamming)
        for u in units:
            mine = {r["key"]: drops[r["key"]] for r in markers[u.id]["records"] if r["key"] in drops}
            if sorted(mine) != markers[u.id]["dropped"]:
                markers[u.id] = _apply_drops(runner, u, markers[u.id], mine)
    _clear_stale(root, units, markers)

    shard_list = [s for u in units for s in markers[u.id]["shards"]]
    records = read_records(root, [s["path"] for s in shard_list])
    rejects = read_rejects(root, [u.id for u in units])
    read = sum(len(u.items) for u in units)
    stats = build_stats(records, rejects, read, teacher_totals([markers[u.id] for u in units]))
    stages = list(config.stages())
    roles = records[0].teacher.model_dump(exclude={"__all__": {"usage"}}) if records else {}
    teacher = {role: info for role, info in roles.items() if info}
    manifest = {
        "schema": SCHEMA_VERSION,
        "format": "webdataset",
        "generator": f"twig-forge {__version__}",
        "complete": config.until == "filter",
        "until": config.until,
        "stages": stages,
        "config_digest": config.digest(),
        "plan_digest": plan_digest(units),
        "config": config.dataset_section(),
        "teacher": teacher,
        "splits": {split: {"records": sum(s["records"] for s in shard_list if s["split"] == split),
                           "shards": [s["path"] for s in shard_list if s["split"] == split]}
                   for split in ("train", "val")},
        "counts": {"read": read, "written": len(records), "rejected": len(rejects),
                   "tasks": stats["tasks"].get("total", 0)},
        "shards": shard_list,
    }
    if read != len(records) + len(rejects):
        raise RuntimeError(f"funnel does not add up: read {read} != written {len(records)} + "
                           f"rejected {len(rejects)}")
    write_json(root / "stats.json", stats)
    assets = _write_card_assets(root, config, records, shard_list)
    write_bytes(root / "README.md",
                render_card(manifest, stats, config.card.license, config.card.pretty_name,
                            engine=config.run.engine, assets=assets).encode())
    listed = ["stats.json", *sorted(assets.files),
              *(f"rejects/{u.id}.jsonl" for u in units if (root / "rejects" / f"{u.id}.jsonl").is_file())]
    manifest["files"] = [file_entry(root, rel) for rel in listed]
    write_json(root / "manifest.json", manifest)  # last: its presence means the dataset is complete
    return manifest


def file_entry(root: Path, rel: str) -> dict:
    data = (root / rel).read_bytes()
    return {"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _write_card_assets(root: Path, config: PipelineConfig, records: list, shard_list: list[dict]):
    """Draw the card's figures into `card/` (and remove figures a previous build left there)."""
    from sharding.plots import pick_examples

    wanted = {r.key for r in pick_examples(records, config.card.examples)} if config.card.figures else set()
    images: dict[str, bytes] = {}
    for shard in shard_list:
        if len(images) == len(wanted):
            break
        images |= {s["__key__"]: s["jpg"] for s in iter_samples(root / shard["path"], exts=("jpg",))
                   if s["__key__"] in wanted}
    assets = (card_assets(records, images, config.annotate.theta, config.card.examples)
              if config.card.figures else CardAssets())
    for name, png in assets.files.items():
        write_bytes(root / name, png)
    for p in (root / "card").glob("*"):
        if f"card/{p.name}" not in assets.files:
            p.unlink()
    return assets


def up_to_date(root: Path, units: list[Unit]) -> bool:
    """True when manifest.json describes exactly this plan and every shard is on disk intact-sized."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("plan_digest") != plan_digest(units):
        return False
    return all((root / s["path"]).is_file() and (root / s["path"]).stat().st_size == s["bytes"]
               for s in manifest.get("shards", []))
