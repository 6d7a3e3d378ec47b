"""Build a dataset: plan, skip finished units, run the rest on the chosen engine, finalize."""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ConfigError, PipelineConfig
from pipeline.engines import get_engine
from pipeline.finalize import finalize, up_to_date
from pipeline.plan import Unit, make_plan
from pipeline.runner import UnitRunner
from pipeline.sources import make_source

log = logging.getLogger("twig")


@dataclass
class BuildResult:
    out: Path
    manifest: dict | None
    units: int
    ran: int
    seconds: float
    up_to_date: bool


def plan_for(config: PipelineConfig) -> list[Unit]:
    items = make_source(config).items()
    if config.limit is not None:
        items = items[: config.limit]
    if not items:
        raise ConfigError("the source has no inputs")
    return make_plan(items, config.digest(), config.shard.max_records)


class OutputError(RuntimeError):
    """The output folder's disk refused a write (full, read-only, quota): the run stops; finished
    units are kept and the same command resumes once there is room."""

    fatal = True


DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted"}


def disk_error(e: OSError, out: Path) -> OutputError | None:
    """A one-line error for a write the output's disk refused, or None for any other OSError."""
    what = DISK_ERRORS.get(e.errno)
    if what is None or (e.errno in (errno.EACCES, errno.EPERM) and e.filename is not None
                        and not str(e.filename).startswith(str(out))):
        return None
    where = f" writing {e.filename}" if e.filename else f" under {out}"
    return OutputError(f"{what}{where}")


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output folder {out}: {e.strerror}") from None
    probe = out / f".write-test.tmp-{os.getpid()}"
    try:  # os.access() says yes to root on a read-only mount's folders: try a real write
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output folder {out} is not writable: {e.strerror}") from None


def check_teacher(config: PipelineConfig) -> None:
    """Fail before any work when a teacher role has no model or its endpoint has no key."""
    roles = config.teacher_roles()
    if not roles:
        return
    from annotators.teacher import FatalTeacherError
    from pipeline.stages import make_teacher

    try:
        make_teacher(config).check(roles)
    except FatalTeacherError as e:
        raise ConfigError(str(e)) from None


def build(config: PipelineConfig) -> BuildResult:
    t0 = time.perf_counter()
    out = Path(config.run.out)
    _check_writable(out)
    check_teacher(config)
    units = plan_for(config)
    total = sum(len(u.items) for u in units)
    if up_to_date(out, units):
        log.info("%s is up to date (%d inputs in %d units): nothing to do", out, total, len(units))
        manifest = json.loads((out / "manifest.json").read_text())
        return BuildResult(out, manifest, len(units), 0, time.perf_counter() - t0, True)
    runner = UnitRunner(config, out)
    pending = [u for u in units if not runner.is_done(u)]
    workers = f", {config.workers()} workers" if config.run.engine == "local" else ""
    log.info("%d inputs in %d units (%d already done); engine %s%s", total, len(units),
             len(units) - len(pending), config.run.engine, workers)
    try:
        # an older manifest would vouch for shards this run rewrites: the folder is not a
        # complete dataset again until finalize writes the new one
        (out / "manifest.json").unlink(missing_ok=True)
        get_engine(config.run.engine)(runner, pending, config.workers(), config.run.progress)
        manifest = finalize(runner, units)
    except OSError as e:
        error = disk_error(e, out)
        if error is None:
            raise
        raise error from None
    dt = time.perf_counter() - t0
    c = manifest["counts"]
    log.info("wrote %d trajectories (%d train, %d val), %d rejected, %d task instances to %s in %.1fs",
             c["written"], manifest["splits"]["train"]["records"], manifest["splits"]["val"]["records"],
             c["rejected"], c["tasks"], out, dt)
    return BuildResult(out, manifest, len(units), len(pending), dt, False)
