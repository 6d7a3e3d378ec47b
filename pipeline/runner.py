"""Run the stages over one work unit and commit its shards, rejects and completion marker.

This is the whole per-unit job; every engine calls `UnitRunner.run(unit)` and nothing else, so
the output does not depend on the engine. A unit is finished when its marker is written (last,
atomically); a resumed run skips finished units and redoes the rest from scratch.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from pipeline.config import PipelineConfig
from pipeline.plan import Unit
from pipeline.record import Reject, Sample
from schemas import ImageInfo, TwigRecord, dump_record
from sharding.atomic import write_json, write_jsonl
from sharding.writer import write_unit_shards

log = logging.getLogger("twig")


def prompt_fingerprint(prompt: str | None) -> str:
    norm = " ".join((prompt or "").lower().split())
    return hashlib.sha256(norm.encode()).hexdigest()[:16]


def marker_path(root: Path, unit_id: str) -> Path:
    return root / ".progress" / f"{unit_id}.json"


def reject_row(key: str, uri: str, split: str, stage: str, reason: str) -> dict:
    return {"key": key, "uri": uri, "split": split, "stage": stage, "reason": reason}


class UnitRunner:
    """Picklable: engines ship it to workers, which call setup() once and run() per unit."""

    def __init__(self, config: PipelineConfig, root: Path) -> None:
        self.config, self.root = config, Path(root)
        self.source = None
        self.stages: list = []

    def setup(self) -> None:
        if self.source is not None:
            return
        from pipeline.sources import make_source
        from pipeline.stages import build_stages

        self.source = make_source(self.config)
        self.stages = build_stages(self.config)
        for stage in self.stages:
            stage.setup()

    def is_done(self, unit: Unit) -> bool:
        path = marker_path(self.root, unit.id)
        try:
            marker = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        if marker.get("digest") != unit.digest:
            return False
        if not (self.root / "rejects" / f"{unit.id}.jsonl").is_file():
            return False
        for shard in marker.get("shards", []):
            p = self.root / shard["path"]
            if not p.is_file() or p.stat().st_size != shard["bytes"]:
                return False
        return True

    def _record(self, s: Sample) -> TwigRecord:
        img = self.config.image
        return TwigRecord(
            key=s.key, prompt=s.prompt or "", category=s.category, split=s.split, source=s.source,
            image=ImageInfo(width=s.image.width, height=s.image.height, sha256=s.sha256,
                            grid=[img.grid, img.grid]),
            regions=s.regions, teacher=s.teacher, filters=s.filters, scene=s.scene,
        )

    def run(self, unit: Unit, tick: Callable[[int], None] | None = None) -> dict:
        self.setup()
        samples, rejects, kept = [], [], []
        for item, got in self.source.load_all(unit.items):
            if tick:
                tick(1)
            if isinstance(got, Reject):
                rejects.append(reject_row(item.key, item.uri, item.split, "read", got.reason))
                continue
            sample, stage = got, "read"
            try:
                for st in self.stages:
                    stage = st.name
                    sample = st(sample)
                stage = "record"
                record = self._record(sample)
            except Reject as r:
                rejects.append(reject_row(item.key, item.uri, item.split, stage, r.reason))
                continue
            except ValidationError as e:
                msg = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
                rejects.append(reject_row(item.key, item.uri, item.split, stage, f"schema: {msg}"))
                continue
            except Exception as e:  # a stage bug must not lose the rest of the unit
                log.warning("stage %s failed on %s: %s: %s", stage, item.uri, type(e).__name__, e)
                rejects.append(reject_row(item.key, item.uri, item.split, stage,
                                          f"stage error: {type(e).__name__}: {e}"))
                continue
            samples.append({"__key__": record.key, "jpg": sample.jpeg, "json": dump_record(record)})
            kept.append({"key": record.key, "uri": item.uri, "prompt": prompt_fingerprint(record.prompt),
                         "phash": sample.phash})
        shards = write_unit_shards(self.root, unit.id, unit.split, samples, self.config.shard.max_bytes)
        write_jsonl(self.root / "rejects" / f"{unit.id}.jsonl", rejects)
        marker = {"unit": unit.id, "split": unit.split, "digest": unit.digest, "read": len(unit.items),
                  "shards": [s.as_dict() for s in shards], "rejects": len(rejects),
                  "records": kept, "dropped": []}
        write_json(marker_path(self.root, unit.id), marker, indent=None)
        return marker
