"""Run the stages over one work unit and commit its shards, rejects and completion marker.

This is the whole per-unit job, in two halves: `compute(unit)` runs the stages and returns the
unit's bytes in memory (a picklable `UnitResult`), `commit(result)` writes them. `run(unit)` does
both where the output folder is at hand (local engine); the Ray and Beam engines compute on their
workers and commit on the driver, so a cluster needs no shared filesystem for the output. Engines
call nothing else, so the output does not depend on the engine. A unit is finished when its marker
is written (last, atomically); a resumed run skips finished units and redoes the rest from scratch.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
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


# The machine's fault, not the record's: such an error stops the run instead of rejecting records
# one by one (a full disk would otherwise turn every remaining input into a reject).
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EMFILE, errno.ENFILE}


class UnitTimeout(RuntimeError):
    """A unit ran past `run.unit_timeout_s`: the run stops and says where the unit was stuck."""

    fatal = True

    def __init__(self, unit: str, seconds: float, where: str) -> None:
        super().__init__(f"unit {unit} timed out after {seconds:g} s, stuck in {where} "
                         "(run.unit_timeout_s; raise it if the work is only slow)")
        self.unit, self.seconds, self.where = unit, seconds, where

    def __reduce__(self):  # crosses process boundaries (a pool's worker, a Ray task)
        return UnitTimeout, (self.unit, self.seconds, self.where)


def steps(config: PipelineConfig) -> list[str]:
    """Where a unit's records can be: reading the input, each stage, building the record, and
    (the whole unit) being written."""
    return ["read", *config.stages(), "record", "commit"]


def describe_where(names: list[str], counts) -> str:
    """'stage guide (2 records), stage draw (1 record)': where a unit's unfinished records are."""
    busy = [(n, int(c)) for n, c in zip(names, counts, strict=True) if c > 0]
    if not busy:
        return "no stage (between stages)"
    return ", ".join(f"stage {n} ({c} record{'' if c == 1 else 's'})" if n != "commit"
                     else "commit (writing its shards)" for n, c in busy)


class Where:
    """How many of the current unit's records are in each step right now. `counts` may be shared
    memory, so that an engine's driver can say where a worker's unit is stuck."""

    def __init__(self, names: list[str], counts: MutableSequence[int] | None = None) -> None:
        self.names, self.counts = names, counts if counts is not None else [0] * len(names)
        self.index = {n: i for i, n in enumerate(names)}

    def reset(self) -> None:
        for i in range(len(self.names)):
            self.counts[i] = 0

    def move(self, old: str | None, new: str | None) -> None:
        if old in self.index:  # (a stage of another name, e.g. a plug-in, is not tracked)
            self.counts[self.index[old]] -= 1
        if new in self.index:
            self.counts[self.index[new]] += 1

    def describe(self) -> str:
        return describe_where(self.names, self.counts)


@dataclass
class UnitResult:
    """One computed unit, before it is written: its records in input order, its rejects, and the
    teacher's spend and request counters."""

    unit: str
    split: str
    digest: str
    read: int
    samples: list[dict] = field(default_factory=list)  # webdataset rows: __key__, jpg, json
    kept: list[dict] = field(default_factory=list)  # key, uri, prompt fingerprint, pHash (for dedup)
    rejects: list[dict] = field(default_factory=list)
    spend: dict[str, dict] = field(default_factory=dict)  # "role/model" -> SPEND_FIELDS
    requests: dict[str, float] = field(default_factory=dict)  # the teacher's live counters


class UnitRunner:
    """Picklable: engines ship it to workers, which call setup() once and compute()/run() per unit.

    Relative paths in the config (source folders, prompt files, the teacher cache) mean the
    driver's working folder: a worker started elsewhere (a Ray node, a Beam harness) moves there
    when that folder exists on its machine."""

    def __init__(self, config: PipelineConfig, root: Path, cwd: str | None = None) -> None:
        self.config, self.root = config, Path(root)
        self.cwd = cwd or os.getcwd()
        self.source = None
        self.stages: list = []
        self.teacher = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.where = Where(steps(config))

    def __getstate__(self) -> dict:  # engines pickle the runner before setup(); keep it that way
        return {"config": self.config, "root": self.root, "cwd": self.cwd}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"], state["root"], state["cwd"])

    def resources(self):
        """What one unit asks of a cluster (`pipeline.stage.unit_resources` over this run's stages)."""
        from pipeline.stage import unit_resources
        from pipeline.stages import build_stages

        return unit_resources(build_stages(self.config))

    def key_variables(self) -> list[str]:
        """The environment variables holding this run's teacher API keys (names only)."""
        names = {self.config.teacher.endpoint_of(r) for r in self.config.teacher_roles()}
        return sorted({self.config.endpoints[n].api_key_env for n in names})

    def for_workers(self, n: int) -> UnitRunner:
        """The run as shipped to `n` workers elsewhere (a Ray cluster, a Beam runner): told that
        `n` workers share the teacher's limits, with each endpoint's base URL fixed here (a node
        without $OPENAI_BASE_URL must not fall back to api.openai.com). Neither changes the output."""
        run = self.config.run.model_copy(update={"workers": n})
        env_url = os.environ.get("OPENAI_BASE_URL") or None
        endpoints = {name: ep.model_copy(update={"base_url": ep.base_url or env_url})
                     for name, ep in self.config.endpoints.items()}
        config = self.config.model_copy(update={"run": run, "endpoints": endpoints})
        return UnitRunner(config, self.root, self.cwd)

    def setup(self) -> None:
        if self.source is not None:
            return
        if os.getcwd() != self.cwd and os.path.isdir(self.cwd):
            os.chdir(self.cwd)
        from pipeline.sources import make_source
        from pipeline.stages import build_stages, make_teacher, window

        self.source = make_source(self.config)
        if self.config.teacher_roles():
            self.teacher = make_teacher(self.config)
        self.stages = build_stages(self.config, self.teacher)
        self.window = window(self.config)
        for stage in self.stages:
            stage.setup()
        from annotators.teacher import new_event_loop

        self.loop = new_event_loop()

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

    async def _process(self, item, got) -> tuple[dict | None, dict | None, dict, dict]:
        """One input through every stage: (sample row, kept row, reject row or None, spend)."""
        if isinstance(got, Reject):
            return None, None, reject_row(item.key, item.uri, item.split, "read", got.reason), {}
        sample, stage = got, "read"
        self.where.move(None, stage)
        try:
            for st in self.stages:
                self.where.move(stage, st.name)
                stage = st.name
                sample = await st.acall(sample) if st.is_async else st(sample)
            self.where.move(stage, "record")
            stage = "record"
            record = self._record(sample)
        except Reject as r:
            return None, None, reject_row(item.key, item.uri, item.split, stage, r.reason), _spend(got)
        except ValidationError as e:
            msg = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            return None, None, reject_row(item.key, item.uri, item.split, stage, f"schema: {msg}"), \
                _spend(got)
        except Exception as e:  # a stage bug must not lose the rest of the unit
            if getattr(e, "fatal", False) or (isinstance(e, OSError)
                                              and e.errno in ENVIRONMENT_ERRNOS):
                raise
            log.warning("stage %s failed on %s: %s: %s", stage, item.uri, type(e).__name__, e)
            return None, None, reject_row(item.key, item.uri, item.split, stage,
                                          f"stage error: {type(e).__name__}: {e}"), _spend(got)
        finally:
            self.where.move(stage, None)
        row = {"__key__": record.key, "jpg": sample.jpeg, "json": dump_record(record)}
        kept = {"key": record.key, "uri": item.uri, "prompt": prompt_fingerprint(record.prompt),
                "phash": sample.phash}
        return row, kept, None, _spend(sample)

    async def _run_all(self, unit: Unit, tick: Callable | None) -> list:
        """Every input of the unit, at most `window` in flight; results in input order."""
        results: list = [None] * len(unit.items)
        gate = asyncio.Semaphore(self.window)
        live = self.teacher.counters if self.teacher else {}
        seen = dict(live)

        async def one(i: int, item, got) -> None:
            try:
                results[i] = await self._process(item, got)
            finally:
                gate.release()
            if tick:
                delta = {k: v - seen.get(k, 0) for k, v in live.items()}
                seen.update(live)
                tick(1, delta)

        loading = iter(self.source.load_all(unit.items))
        try:
            async with asyncio.TaskGroup() as group:  # a fatal error cancels the rest
                for i in range(len(unit.items)):
                    await gate.acquire()
                    self.where.move(None, "read")
                    try:
                        item, got = next(loading)
                    finally:
                        self.where.move("read", None)
                    group.create_task(one(i, item, got))
        except BaseExceptionGroup as eg:
            raise eg.exceptions[0] from None
        finally:
            if self.teacher:
                await self.teacher.aclose()
        return results

    async def _bounded(self, unit: Unit, tick: Callable | None) -> list:
        """`_run_all` within `run.unit_timeout_s`: past it, the unit's work is cancelled and the
        run stops with the stage the unit was stuck in. (A stage that blocks this event loop
        cannot be interrupted here; the engines' watchdogs stop those.)"""
        limit = self.config.run.unit_timeout_s
        work = asyncio.ensure_future(self._run_all(unit, tick))
        await asyncio.wait({work}, timeout=limit)
        if work.done():  # (also when it ended just now, e.g. interrupted by an engine's watchdog)
            return work.result()
        where = self.where.describe()
        work.cancel()
        try:
            await asyncio.wait_for(work, 10)
        except UnitTimeout:  # an engine's watchdog got there first: its report says more
            raise
        except BaseException:
            pass
        raise UnitTimeout(unit.id, limit, where)

    def compute(self, unit: Unit, tick: Callable | None = None) -> UnitResult:
        """Run every stage over the unit's inputs; nothing is written to the output folder."""
        self.setup()
        self.where.reset()
        start = dict(self.teacher.counters) if self.teacher else {}
        results = self.loop.run_until_complete(self._bounded(unit, tick))
        out = UnitResult(unit.id, unit.split, unit.digest, len(unit.items))
        for row, keep, reject, spend in results:
            if reject is not None:
                out.rejects.append(reject)
            else:
                out.samples.append(row)
                out.kept.append(keep)
            for (role, model), sp in spend.items():
                b = out.spend.setdefault(f"{role}/{model}", dict.fromkeys(SPEND_FIELDS, 0))
                for f in SPEND_FIELDS:
                    b[f] += getattr(sp, f)
        out.spend = dict(sorted(out.spend.items()))
        if self.teacher:
            # rounded: a float delta of running sums must not depend on the worker's history
            out.requests = {k: round(v - start.get(k, 0), 9) for k, v in self.teacher.counters.items()}
        return out

    def commit(self, result: UnitResult) -> dict:
        """Write a computed unit: its shard(s), its rejects, then (last, atomically) its marker."""
        shards = write_unit_shards(self.root, result.unit, result.split, result.samples,
                                   self.config.shard.max_bytes)
        write_jsonl(self.root / "rejects" / f"{result.unit}.jsonl", result.rejects)
        marker = {"unit": result.unit, "split": result.split, "digest": result.digest,
                  "read": result.read, "shards": [s.as_dict() for s in shards],
                  "rejects": len(result.rejects), "records": result.kept, "dropped": [],
                  "teacher": {"spend": result.spend, "requests": result.requests}}
        write_json(marker_path(self.root, result.unit), marker, indent=None)
        return marker

    def run(self, unit: Unit, tick: Callable | None = None) -> dict:
        result = self.compute(unit, tick)
        self.where.move(None, "commit")
        try:
            return self.commit(result)
        finally:
            self.where.move("commit", None)


SPEND_FIELDS = ("calls", "prompt_tokens", "completion_tokens", "images", "cost")


def _spend(sample) -> dict:
    return sample.work.get("spend", {}) if isinstance(sample, Sample) else {}
