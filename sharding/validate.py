"""`twig validate`: records against the schema, images at the declared size, regions tiling the
grid, and manifest counts and sha256 against the shards on disk."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from schemas import SchemaError, load_record, region_problems
from sharding.reader import iter_samples


@dataclass
class Report:
    records: int = 0
    shards: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self, show: int = 50) -> str:
        head = f"{self.shards} shards, {self.records} records: "
        if self.ok:
            return head + "OK"
        lines = [head + f"{len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in self.problems[:show]]
        if len(self.problems) > show:
            lines.append(f"  ... and {len(self.problems) - show} more")
        return "\n".join(lines)


def validate_dataset(root: Path, check_images: bool = True) -> Report:
    rep = Report()
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except OSError:
        rep.problems.append(f"{root}/manifest.json is missing (the build did not finish)")
        return rep
    except ValueError as e:
        rep.problems.append(f"manifest.json is not valid JSON: {e}")
        return rep
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list) or not all(
            isinstance(s, dict) and {"path", "bytes", "sha256", "split", "records"} <= set(s)
            for s in manifest["shards"]):
        rep.problems.append("manifest.json is not a twig-forge manifest (no valid shard list)")
        return rep
    if manifest.get("schema") != "twig/v1":
        rep.problems.append(f"unsupported schema version {manifest.get('schema')!r}")
        return rep
    complete = bool(manifest.get("complete"))
    segmented = "segment" in manifest.get("stages", [])
    keys: set[str] = set()
    listed = {s["path"] for s in manifest["shards"]}
    for p in sorted((root / "shards").glob("*.tar")):
        if f"shards/{p.name}" not in listed:
            rep.problems.append(f"shards/{p.name} is on disk but not in the manifest")
    for shard in manifest["shards"]:
        path = root / shard["path"]
        rep.shards += 1
        if not path.is_file():
            rep.problems.append(f"{shard['path']}: missing")
            continue
        data = path.read_bytes()
        if len(data) != shard["bytes"] or hashlib.sha256(data).hexdigest() != shard["sha256"]:
            rep.problems.append(f"{shard['path']}: size or sha256 differs from the manifest")
        n = 0
        try:
            samples = list(iter_samples(path))
        except Exception as e:
            rep.problems.append(f"{shard['path']}: unreadable tar ({e})")
            continue
        for s in samples:
            n += 1
            where = f"{shard['path']}:{s['__key__']}"
            if "json" not in s or "jpg" not in s:
                rep.problems.append(f"{where}: needs both .jpg and .json")
                continue
            try:
                rec = load_record(s["json"])
            except SchemaError as e:
                rep.problems.append(f"{where}: {e}")
                continue
            if rec.key != s["__key__"]:
                rep.problems.append(f"{where}: record key {rec.key!r} differs from the member name")
            if rec.key in keys:
                rep.problems.append(f"{where}: duplicate key")
            keys.add(rec.key)
            if rec.split != shard["split"]:
                rep.problems.append(f"{where}: split {rec.split} in a {shard['split']} shard")
            if hashlib.sha256(s["jpg"]).hexdigest() != rec.image.sha256:
                rep.problems.append(f"{where}: image sha256 differs from the record")
            if check_images:
                try:
                    im = Image.open(io.BytesIO(s["jpg"]))
                    im.load()
                    if im.size != (rec.image.width, rec.image.height):
                        rep.problems.append(f"{where}: image is {im.size}, record says "
                                            f"{rec.image.width}x{rec.image.height}")
                except Exception as e:
                    rep.problems.append(f"{where}: image does not decode ({e})")
            if segmented:
                rep.problems += [f"{where}: {p}" for p in region_problems(rec, complete=complete)]
        rep.records += n
        if n != shard["records"]:
            rep.problems.append(f"{shard['path']}: {n} records, manifest says {shard['records']}")
    for entry in manifest.get("files", []):
        path = root / entry["path"]
        if not path.is_file():
            rep.problems.append(f"{entry['path']}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            rep.problems.append(f"{entry['path']}: sha256 differs from the manifest")
    if rep.records != manifest["counts"]["written"]:
        rep.problems.append(f"{rep.records} records in shards, manifest says {manifest['counts']['written']}")
    return rep
