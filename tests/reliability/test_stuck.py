"""Stuck work: a unit that never finishes is stopped after `run.unit_timeout_s` with the stage it
is stuck in, a worker that dies stops the run instead of leaving it waiting, and nothing hangs.

- A teacher request that never answers (the local server's `hang` fault, with the client's own
  request timeout set to an hour) through `twig dataset`: the unit gives up by itself; the same
  command then resumes and finishes.
- A stage that blocks its worker (it never returns and never yields) cannot give up by itself:
  the local engine's watchdog stops the worker, in the process pool and in a single process.
  The stage is a real one with its call wrapped to block on one record: no real stage can be
  made to hang on purpose.
- A worker killed from outside (as the OOM killer does) ends the run with a clear error.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from annotators.teacher.localserver import running
from pipeline.config import load_config
from pipeline.driver import build, plan_for
from pipeline.engines import EngineError
from pipeline.engines.local import run_local
from pipeline.runner import UnitRunner, UnitTimeout
from pipeline.stage import Stage
from tests.conftest import REPO, TWIG
from tests.reliability import _crash as c
from tests.reliability.conftest import CHAOS

pytestmark = pytest.mark.timeout(240)

LIMIT_S = 2.0


class Blocking(Stage):
    """A real stage whose call, for one record, blocks the process for good (or kills it)."""

    def __init__(self, inner: Stage, victim: str, how: str) -> None:
        self.inner, self.victim, self.how = inner, victim, how
        self.name, self.resources = inner.name, inner.resources

    def setup(self) -> None:
        self.inner.setup()

    def __call__(self, sample):
        if sample.key == self.victim:
            if self.how == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(3600)  # no await: the unit's event loop is blocked too
        return self.inner(sample)


class BlockingRunner(UnitRunner):
    """The pipeline's runner with its `segment` stage blocking on one record (picklable: the local
    engine ships it to spawned workers, which import this module)."""

    victim = ""
    how = "block"

    def setup(self) -> None:
        fresh = self.source is None
        super().setup()
        if fresh:
            self.stages = [Blocking(s, self.victim, self.how) if s.name == "segment" else s
                           for s in self.stages]

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "victim": self.victim, "how": self.how}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.victim, self.how = state["victim"], state["how"]


def _runner(tmp_path: Path, how: str = "block") -> tuple[BlockingRunner, list]:
    config = load_config(None, ["source.count=24", "shard.max_records=6", "run.progress=false",
                                f"run.out={tmp_path / 'out'}", f"run.unit_timeout_s={LIMIT_S}"])
    units = plan_for(config)
    runner = BlockingRunner(config, tmp_path / "out")
    runner.victim, runner.how = units[1].items[2].key, how
    return runner, units


def _children_left(wait_s: float = 5.0) -> list:
    """Worker processes still running (a killed one may take a moment to be reaped)."""
    deadline = time.monotonic() + wait_s
    while mp.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    return mp.active_children()


@pytest.mark.parametrize("workers", [2, 1], ids=["process-pool", "single-process"])
def test_a_stage_that_never_returns_is_stopped_with_its_stage(tmp_path, figures, workers):
    runner, units = _runner(tmp_path)
    t0 = time.monotonic()
    with pytest.raises(UnitTimeout) as got:
        run_local(runner, units, workers, False)
    took = time.monotonic() - t0
    figures.add("stuck", "trials")
    figures.add("stuck", f"faults:stage_never_returns ({'pool' if workers > 1 else 'in-process'})")
    figures.set("stuck", f"seconds_to_stop:stage_never_returns_{workers}w_limit_{LIMIT_S:g}s",
                round(took, 1))
    assert got.value.unit == units[1].id
    assert str(got.value).startswith(f"unit {units[1].id} timed out after {LIMIT_S:g} s, stuck in "
                                      "stage segment (1 record)"), str(got.value)
    assert took < 60, took
    assert not _children_left(), "the stuck worker was left running"
    figures.add("stuck", "runs_stopped_with_stage_named")


def test_a_killed_worker_stops_the_run_instead_of_hanging(tmp_path, figures):
    runner, units = _runner(tmp_path, how="die")
    t0 = time.monotonic()
    with pytest.raises(EngineError) as got:
        run_local(runner, units, 2, False)
    figures.add("stuck", "trials")
    figures.add("stuck", "faults:worker_killed (engine)")
    assert time.monotonic() - t0 < 60
    assert "a worker process died (pid" in str(got.value) and "killed by SIGKILL" in str(got.value)
    assert units[1].id in str(got.value)
    assert not _children_left()
    figures.add("stuck", "runs_stopped_on_a_dead_worker")


def test_a_teacher_request_that_never_answers_times_out_and_the_run_resumes(tmp_path, figures):
    """Through `twig dataset`, against the bundled local server (a real HTTP server speaking the
    OpenAI protocol: the stand-in for a remote API), whose `hang` fault never answers the first
    attempt of a request; the client's own timeout is an hour, so only the unit limit stops it."""
    prompts = tmp_path / "color_train.txt"
    prompts.write_text("a red cube\na blue ball fault:hang\na green cup\na yellow star\n")
    out = tmp_path / "out"
    cmd = [*TWIG, "dataset", "--recipe", "prompt-first", "--model", "gpt-4o-mini", "--out", str(out),
           "--no-progress", "--workers", "2", "--set", "shard.max_records=2",
           "--set", "teacher.image.size=256x256", "--set", f"source.prompts=['{prompts}']",
           "--set", "endpoints.default.timeout_s=3600", "--set", f"run.unit_timeout_s={LIMIT_S}"]
    with running("--hang-s", "3600") as url:
        env = {**os.environ, "OPENAI_BASE_URL": url, "OPENAI_API_KEY": "sk-local-test"}
        t0 = time.monotonic()
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - t0
        figures.add("stuck", "trials")
        figures.add("stuck", "faults:teacher_request_never_answers")
        figures.set("stuck", f"seconds_to_stop:teacher_hang_limit_{LIMIT_S:g}s (incl. start-up)",
                    round(took, 1))
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        error = r.stderr.strip().splitlines()[-1]
        assert error.startswith("twig: error: unit train-0000") and \
            f"timed out after {LIMIT_S:g} s, stuck in stage guide (" in error, r.stderr
        assert error.endswith("finished work is kept, run again to resume")
        assert not c.partial_files(out) and not (out / "manifest.json").exists()
        figures.add("stuck", "runs_stopped_with_stage_named")

    with running("--hang-s", "0") as url:  # the endpoint answers again: the same command
        env = {**os.environ, "OPENAI_BASE_URL": url, "OPENAI_API_KEY": "sk-local-test"}
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        figures.add("stuck", "resumed_and_finished")
    assert not c.temp_files(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["written"] == 4


@pytest.mark.skipif(not CHAOS, reason="make chaos (starts a Ray cluster and Beam workers)")
@pytest.mark.parametrize("engine", ["beam", "ray"])
def test_a_teacher_request_that_never_answers_stops_ray_and_beam_too(engine, request, tmp_path,
                                                                    figures, monkeypatch):
    """The unit's own limit holds on the workers of Ray (a real two-node cluster on this machine)
    and Beam (FnApiRunner, worker processes): the run stops with the stage named."""
    prompts = tmp_path / "color_train.txt"
    prompts.write_text("a red cube\na blue ball fault:hang\n")
    sets = ["run.engine=beam"] if engine == "beam" else \
        ["run.engine=ray", f"run.ray.address={request.getfixturevalue('ray_cluster').address}"]
    with running("--hang-s", "3600") as url:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test")
        config = load_config(None, [
            "source.kind=prompts", f"source.prompts=['{prompts}']", "teacher.model=gpt-4o-mini",
            "teacher.image.size=256x256", "shard.max_records=2", "run.progress=false",
            f"run.out={tmp_path / 'out'}", f"endpoints.default.base_url={url}",
            "endpoints.default.timeout_s=3600", f"run.unit_timeout_s={LIMIT_S}", *sets])
        t0 = time.monotonic()
        with pytest.raises(Exception, match=rf"timed out after {LIMIT_S:g} s, stuck in stage guide"):
            build(config)
    figures.add("stuck", "trials")
    figures.add("stuck", f"faults:teacher_request_never_answers ({engine})")
    figures.set("stuck", f"seconds_to_stop:teacher_hang_{engine}_limit_{LIMIT_S:g}s",
                round(time.monotonic() - t0, 1))
    figures.add("stuck", "runs_stopped_with_stage_named")
