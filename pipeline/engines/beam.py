"""The Beam engine: a Beam pipeline over the work units; the driver commits what workers compute.

`run.beam.runner: direct` (the default) runs Beam's FnApiRunner in this process with
`direct_num_workers` worker processes (`direct_running_mode`), and needs no download: Beam's own
`DirectRunner` first tries the Prism runner, which fetches a binary at start. Any other runner name
(DataflowRunner, FlinkRunner, SparkRunner, PortableRunner) gets `run.beam.options` passed through.

Workers leave each computed unit in a staging folder (any Beam filesystem: a local path, gs://,
s3://, hdfs://), written under a temporary name and renamed; the driver commits units as they
appear, so the output folder is only where the driver runs. A unit staged by a run that was killed
before its driver committed it is committed by the next run without computing it again.
"""

from __future__ import annotations

import logging
import os
import pickle
import shlex
import shutil
import sys
import threading
import uuid

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.config import BeamConfig
from pipeline.engines import EngineError
from pipeline.plan import Unit, largest_first
from pipeline.progress import Bar
from pipeline.runner import UnitRunner

log = logging.getLogger("twig")
POLL_S = 0.3


def _name(unit: Unit) -> str:
    return f"{unit.id}-{unit.digest[:16]}"


def _put(staging: str, name: str, data: bytes) -> None:
    """Write a staged file under a temporary name, then rename it (atomic on local filesystems)."""
    final = FileSystems.join(staging, name)
    tmp = FileSystems.join(staging, f"tmp-{uuid.uuid4().hex}-{name}")
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)
    FileSystems.rename([tmp], [final])


def _read(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


class ComputeUnit(beam.DoFn):
    """Compute one unit on a Beam worker and stage it for the driver."""

    def __init__(self, runner: UnitRunner, staging: str) -> None:
        self.runner, self.staging = runner, staging

    def setup(self) -> None:
        self.runner.setup()

    def process(self, unit: Unit):
        try:
            result = self.runner.compute(unit)
        except Exception as e:
            if getattr(e, "fatal", False):  # let the driver report it in its own words
                _put(self.staging, _name(unit) + ".fatal", str(e).encode())
            raise
        _put(self.staging, _name(unit) + ".unit", pickle.dumps(result, protocol=5))
        yield unit.id


def pipeline_options(cfg: BeamConfig, workers: int) -> tuple[object, PipelineOptions]:
    """The runner and its options: FnApiRunner on `workers` processes, or a named runner with the
    configured options passed through as flags."""
    flags = []
    for key, value in cfg.options.items():
        for v in value if isinstance(value, list) else [value]:
            if v is True:
                flags.append(f"--{key}")
            elif v is not False and v is not None:
                flags.append(f"--{key}={v}")
    if cfg.runner == "direct":
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle
        from apache_beam.transforms.environments import SubprocessSDKEnvironment

        environment = None
        mode = cfg.running_mode
        if mode == "multi_processing":
            # Beam's multi_processing mode is `workers` SDK worker subprocesses; these start
            # through beam_worker, which keeps Beam's start-up chatter off the terminal
            environment = SubprocessSDKEnvironment.from_command_string(
                f"{shlex.quote(sys.executable)} -m pipeline.engines.beam_worker")
            mode = "in_memory"  # in FnApiRunner's terms: use the environment given to it
        flags += [f"--direct_running_mode={mode}", f"--direct_num_workers={workers}",
                  "--default_sdk_harness_log_level=WARNING"]
        options = PipelineOptions(flags)
        # as Beam's DirectRunner does: the workers get the options (their log level among them)
        info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(
            pipeline_options=JobServiceHandle.encode_pipeline_options(options.get_all_options())))
        return fn_runner.FnApiRunner(default_environment=environment, provision_info=info), options
    return cfg.runner, PipelineOptions(flags)


def staging_dir(cfg: BeamConfig, root) -> str:
    if cfg.staging:
        return cfg.staging
    temp = cfg.options.get("temp_location") or cfg.options.get("staging_location")
    if temp:
        return str(temp).rstrip("/") + "/twig-staging"  # a URL (gs://...) or a path
    return os.path.abspath(os.path.join(root, ".staging"))


def _matching(staging: str, pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([FileSystems.join(staging, pattern)])[0].metadata_list)


def run_beam(runner: UnitRunner, units: list[Unit], workers: int, progress: bool) -> list[dict]:
    """Run every unit through Beam, committing each here as its staged result appears."""
    if not units:
        return []
    cfg = runner.config.run.beam
    if not log.isEnabledFor(logging.DEBUG):  # Beam's start-up chatter; a failure still raises
        logging.getLogger("apache_beam").setLevel(logging.ERROR)
    staging = staging_dir(cfg, runner.root)
    if not FileSystems.exists(staging):
        FileSystems.mkdirs(staging)
    stale = _matching(staging, "tmp-*") + _matching(staging, "*.fatal")  # left by a killed run
    if stale:
        FileSystems.delete(stale)
    pending = {_name(u): u for u in units}
    markers: dict[str, dict] = {}

    def sweep(bar: Bar | None) -> None:
        for path in _matching(staging, "*.unit"):
            unit = pending.pop(os.path.basename(path).removesuffix(".unit"), None)
            if unit is None:
                continue
            result = pickle.loads(_read(path))
            markers[unit.id] = runner.commit(result)
            FileSystems.delete([path])
            if bar:
                bar.tick(result.read, result.requests)

    sweep(None)  # units a killed run computed but did not commit
    if len(pending) < len(units):
        log.info("beam: committed %d unit(s) a previous run had staged", len(units) - len(pending))
    if pending:
        in_memory = cfg.runner == "direct" and cfg.running_mode == "in_memory"
        n = 1 if in_memory else max(1, min(workers, len(pending)))
        runner_of, options = pipeline_options(cfg, n)
        shipped = runner.for_workers(n)
        order = largest_first(list(pending.values()))
        log.info("beam: %d units on %s (%s)", len(order),
                 "FnApiRunner" if cfg.runner == "direct" else cfg.runner,
                 f"{cfg.running_mode}, {n} workers" if cfg.runner == "direct" else "its workers")
        failure: list[BaseException] = []

        def go() -> None:
            try:
                with beam.Pipeline(runner=runner_of, options=options) as p:
                    (p | "units" >> beam.Create(order)
                     | "compute" >> beam.ParDo(ComputeUnit(shipped, staging)))
            except BaseException as e:  # reported by the driver thread below
                failure.append(e)

        bar = Bar(sum(len(u.items) for u in order), progress)
        try:
            thread = threading.Thread(target=go, name="twig-beam", daemon=True)
            thread.start()
            while thread.is_alive():
                thread.join(POLL_S)
                sweep(bar)
            sweep(bar)
        finally:
            bar.close()
        if failure:
            fatal = _matching(staging, "*.fatal")
            if fatal:
                message = _read(fatal[0]).decode()
                FileSystems.delete(fatal)
                raise EngineError(message)
            lines = str(failure[0]).strip().splitlines()
            raise EngineError(f"the Beam pipeline failed: {lines[-1] if lines else type(failure[0]).__name__}")
        if pending:
            raise EngineError(f"the Beam pipeline ended without units {', '.join(sorted(pending))}")
    if not cfg.staging:  # <out>/.staging is this output's own: nothing left in it is needed
        shutil.rmtree(staging, ignore_errors=True)
    return [markers[u.id] for u in units]
