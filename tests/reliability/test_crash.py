"""Crash tests: `twig dataset` (prompt-first, teacher calls to a real local HTTP server that speaks
the OpenAI protocol, the stand-in for a remote API) is killed with SIGKILL, build and workers
together, at seeded random moments and at aimed ones, then run again until it finishes.

Kills land at random moments of the whole run, during teacher calls, on the main process alone
(its workers must leave by themselves), and inside a write: the aimed kills stop the build with a
`TWIG_FAILPOINT` pause half-way through writing a shard, a rejects file, a marker, stats.json, the
card, the manifest, or finalize's rewrite of a shard after dropping a duplicate, and kill it there.

After every kill no file under a final name may be partial. The finished folder must equal an
uninterrupted run's byte for byte, except what the last run of each unit sent over the network
(stats.json `teacher.last_run`, the markers' request counters, the manifest's hash of stats.json),
which is checked instead: sent + cache hits equal the reference's requests. No sample may be lost
or duplicated. Every request is counted at the server by the client's cache key: a request is paid
twice only when a kill caught it in flight (sent, its answer not yet in the cache); one whose
answer was in the cache must never be sent again. `make chaos` runs many more trials.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.reliability import _crash as c
from tests.reliability._crash_server import running
from tests.reliability.conftest import CHAOS

pytestmark = pytest.mark.timeout(1800 if CHAOS else 300)

PROMPTS = [line for line in (REPO / "assets/t2i-compbench/color_train.txt").read_text().splitlines()
           if line][:11]
PROMPTS.append(PROMPTS[0].capitalize())  # the same prompt again: finalize drops it, rewriting a shard
AIMS = {  # failpoint glob -> the phase a kill there lands in
    "shards/*.tar": "shard write", "rejects/*.jsonl": "rejects write",
    ".progress/*.json": "marker write", "stats.json": "stats write", "card/*.png": "card write",
    "README.md": "card write", "manifest.json": "manifest write", "dedup": "finalize shard rewrite"}
ATTEMPT_S = 240  # no attempt may take longer: a hang fails the test


def build_args(out: Path, prompts: Path, workers: int = 2) -> list[str]:
    return ["dataset", "--recipe", "prompt-first", "--model", "gpt-4o-mini", "--out", str(out),
            "--no-progress", "--workers", str(workers), "--set", "shard.max_records=3",
            "--set", "teacher.image.size=256x256", "--set", f"source.prompts=['{prompts}']",
            "--set", "endpoints.default.timeout_s=60", "--set", "endpoints.default.backoff_base_s=0.05"]


@dataclass
class Env:
    url: str
    prompts: Path
    ref: Path
    ref_keys: Counter
    teacher_s: tuple[float, float]  # seconds after start of the first and last teacher request
    dedup_shard: str  # the shard finalize rewrites after dropping the duplicate prompt
    logs: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {"OPENAI_BASE_URL": self.url, "OPENAI_API_KEY": "sk-local-test", **extra}


@pytest.fixture(scope="module")
def crash_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    prompts = tmp / "color_train.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    with running(latency=0.05) as url:
        env = Env(url, prompts, tmp / "reference", Counter(), (0.0, 0.0), "", tmp / "logs")
        env.logs.mkdir()
        t0 = time.monotonic()
        proc = c.start(build_args(env.ref, prompts), env.env(), env.logs / "reference.log")
        first = last = None
        seen = 0
        while proc.poll() is None:  # when the teacher calls happen, to aim kills at them
            n = sum(c.server_keys(url)["keys"].values())
            if n != seen:
                first, last, seen = first or time.monotonic() - t0, time.monotonic() - t0, n
            time.sleep(0.05)
        assert proc.wait() == 0, (env.logs / "reference.log").read_text()
        env.ref_keys = Counter(c.server_keys(url)["keys"])
        env.teacher_s = (first, last)
        rejects = {p.stem: p.read_text() for p in (env.ref / "rejects").glob("*.jsonl")}
        dup = [unit for unit, text in rejects.items() if "duplicate_prompt" in text]
        assert len(dup) == 1, rejects
        env.dedup_shard = f"shards/{dup[0]}.tar"
        manifest = json.loads((env.ref / "manifest.json").read_text())
        assert manifest["counts"] == {**manifest["counts"], "read": 12, "written": 11, "rejected": 1}
        yield env


def _phase(env: Env, out: Path) -> str:
    if (out / "manifest.json").is_file():
        return "after the manifest"
    if c.server_keys(env.url)["inflight"]:
        return "teacher calls"
    temps = c.temp_files(out)
    if temps:
        folder = temps[0].split("/")[0] if "/" in temps[0] else ""
        what = {"shards": "shard", "rejects": "rejects", ".progress": "marker", "card": "card"}
        return f"{what.get(folder, 'finalize')} write (random moment)"
    if not (out / ".progress").is_dir():
        return "start-up"
    return "CPU work between requests"


def attempt(env: Env, out: Path, kind: str, rng: random.Random, n: int) -> str | None:
    """One run of the build, killed as `kind` says: the phase the kill landed in, or None when the
    build finished first."""
    extra, workers = {}, 2
    if kind.startswith("aim:"):
        glob = kind[4:]
        if glob == "dedup":  # one process: its last write of that shard is finalize's rewrite
            done = (out / ".progress" / Path(env.dedup_shard).with_suffix(".json").name).is_file()
            glob, workers = f"{env.dedup_shard}@{1 if done else 2}", 1
        extra["TWIG_FAILPOINT"] = f"pause:{glob}"
    log = env.logs / f"{out.name}-{n}.log"
    start_keys = sum(c.server_keys(env.url)["keys"].values())
    t0 = time.monotonic()
    proc = c.start(build_args(out, env.prompts, workers), env.env(**extra), log)
    try:
        return _kill(env, out, kind, rng, proc, log, t0, start_keys)
    except BaseException:
        c.kill_session(proc)  # a failed check or an interrupt leaves no build running
        raise


def _kill(env: Env, out: Path, kind: str, rng: random.Random, proc: subprocess.Popen, log: Path,
          t0: float, start_keys: int) -> str | None:
    if kind.startswith("aim:"):
        if not c.wait_stopped(proc, ATTEMPT_S):
            assert proc.returncode == 0, log.read_text()
            return None
        phase = AIMS[kind[4:]]
        assert c.temp_files(out), "a paused write leaves its temporary file"
    else:
        if kind in ("teacher", "main"):  # a moment while the teacher is being called
            while sum(c.server_keys(env.url)["keys"].values()) == start_keys:
                if proc.poll() is not None or time.monotonic() - t0 > ATTEMPT_S:
                    break
                time.sleep(0.01)
            delay = rng.uniform(0, env.teacher_s[1] - env.teacher_s[0])
        else:
            delay = rng.uniform(0, env.teacher_s[1] + 4)
        try:
            proc.wait(delay)
            assert proc.returncode == 0, log.read_text()
            return None
        except subprocess.TimeoutExpired:
            pass
        phase = _phase(env, out)
    if kind == "main":
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone: its workers must notice and leave
        proc.wait(30)
        deadline = time.monotonic() + 10
        while c.session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphans = c.session(proc.pid)
        c.kill_session(proc)
        assert not orphans, f"workers outlived their killed driver: {orphans}"
        phase = f"main process only, {phase}"
    else:
        c.kill_session(proc)
    return phase


def run_trial(env: Env, out: Path, plan: list[str], seed: int, figures) -> None:
    rng = random.Random(seed)
    cache = out / "cache" / "teacher"
    before = Counter(c.server_keys(env.url)["keys"])
    last = Counter(before)
    cached: set[str] = set()
    resent_cached = in_flight = 0
    figures.add("crash", "trials")
    for n, kind in enumerate([*plan, "finish"]):
        if kind == "finish":
            log = env.logs / f"{out.name}-final.log"
            proc = c.start(build_args(out, env.prompts), env.env(), log)
            assert c.finish(proc, ATTEMPT_S) == 0, log.read_text()
            phase = None
        else:
            phase = attempt(env, out, kind, rng, n)
        now = Counter(c.server_keys(env.url)["keys"])
        sent = now - last  # what this attempt sent
        resent_cached += sum(sent[k] for k in sent if k in cached)  # answered before: must be 0
        last = now
        if phase is None:
            continue
        figures.add("crash", "kills")
        figures.add("crash", f"kills:{phase}")
        bad = c.partial_files(out)
        figures.add("crash", "partial_files_seen", len(bad))
        assert not bad, f"after a kill in {phase}: {bad}"
        cached = c.cached_keys(cache)
        in_flight += sum(n for k, n in sent.items() if k not in cached)  # sent, answer lost

    assert not c.temp_files(out), "a finished build leaves no temporary file"
    diffs = c.differences(out, env.ref)
    keys, ref_keys = c.record_keys(out), set(c.record_keys(env.ref))
    total = Counter(c.server_keys(env.url)["keys"]) - before
    paid_twice = sum(max(0, n - env.ref_keys[k]) for k, n in total.items())
    never_sent = sum(max(0, n - total[k]) for k, n in env.ref_keys.items())
    figures.add("crash", "samples_lost", len(ref_keys - set(keys)))
    figures.add("crash", "samples_duplicated", len(keys) - len(set(keys)))
    figures.add("crash", "requests_paid_twice", paid_twice)
    figures.add("crash", "requests_in_flight_at_kills", in_flight)
    figures.add("crash", "requests_resent_though_cached", resent_cached)
    figures.add("crash", "outputs_identical", int(not diffs))
    assert not diffs, diffs
    assert sorted(keys) == sorted(ref_keys)
    assert resent_cached == 0, "a request whose answer was already cached was sent again"
    assert never_sent == 0, "the finished build is missing answers the reference got"
    # exactly the requests a kill caught in flight (sent, answer not yet cached) are bought again
    assert paid_twice == in_flight, (paid_twice, in_flight)


def test_kills_during_teacher_calls_writes_and_manifest_resume_to_identical_output(
        crash_env, tmp_path, figures):
    """The CI trial: one kill while teacher requests are in flight, one half-way through a shard,
    one half-way through the manifest; then the run finishes identical to the reference."""
    run_trial(crash_env, tmp_path / "ci", ["teacher", "aim:shards/*.tar", "aim:manifest.json"], 0,
              figures)


@pytest.mark.skipif(not CHAOS, reason="make chaos runs these trials")
@pytest.mark.parametrize("trial", range(24))
def test_chaos_trial(crash_env, tmp_path, figures, trial):
    """`make chaos`: 24 trials of 2-3 kills each: one or two at random moments (of the whole run,
    of its teacher calls, of the main process alone), then one aimed at a write, each in turn."""
    rng = random.Random(1000 + trial)
    aims = [f"aim:{a}" for a in AIMS]
    plan = [*rng.choices(["random", "teacher", "teacher", "main"], k=rng.randint(1, 2)),
            aims[trial % len(aims)]]  # kills at any moment, then one aimed at a write
    run_trial(crash_env, tmp_path / f"t{trial}", plan, 1000 + trial, figures)


@pytest.mark.skipif(not CHAOS, reason="make chaos (CI: tests/reliability/test_stuck.py)")
def test_a_dead_worker_stops_the_run_instead_of_hanging(crash_env, tmp_path, figures):
    """A worker killed on its own (the OOM killer picks one process) must not leave the driver
    waiting forever for its unit: the run stops with a clear error, and a rerun finishes."""
    out = tmp_path / "dead-worker"
    log = crash_env.logs / "dead-worker.log"
    proc = c.start(build_args(out, crash_env.prompts), crash_env.env(), log)
    start = sum(c.server_keys(crash_env.url)["keys"].values())
    deadline = time.monotonic() + ATTEMPT_S
    while sum(c.server_keys(crash_env.url)["keys"].values()) == start:  # workers are at work
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.01)
    workers = [pid for pid, _ in c.session(proc.pid)
               if pid != proc.pid and b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    rc = c.finish(proc, 60)
    err = log.read_text()
    figures.add("stuck", "trials")
    figures.add("stuck", "faults:worker_killed (twig dataset)")
    figures.add("stuck", "runs_stopped_on_a_dead_worker", int(rc == 1))
    assert rc == 1 and "a worker process died" in err and "SIGKILL" in err, err
    assert "Traceback" not in err
    assert not c.partial_files(out)
    proc = c.start(build_args(out, crash_env.prompts), crash_env.env(), log)
    assert c.finish(proc, ATTEMPT_S) == 0, log.read_text()
    assert not c.differences(out, crash_env.ref)
