"""Teacher faults: whole prompt-first builds against a teacher that fails at a rate.

The teacher is `annotators.teacher.localserver`, a real HTTP server on 127.0.0.1 speaking the
OpenAI chat-completions and images protocols (the stand-in for a remote endpoint), started with
seeded rate-based faults: 429 with Retry-After, 500, hangs past the client timeout, malformed
answers, truncation (`finish_reason` length, a PNG cut short), refusals and connection resets.
Every request attempt draws its fault from a hash of (seed, body, attempt), so a run is
reproducible and a retry can succeed.

For every run of the matrix (fault rates 0-50% x each kind alone and all mixed; CI runs a subset,
`make chaos` the whole matrix with several seeds) it checks what a user relies on:
- the build completes within a bound computed from the timeout, retry and backoff settings;
- no request was sent more than 1 + max_retries times, and the client's request and retry counts
  agree with what the server received;
- every input is exactly one record in the shards or one line in rejects/*.jsonl (no loss, no
  overlap) and stats.json / manifest.json counts add up (read == written + rejected);
- every reject a fault caused carries a reason that names that fault.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.request
from pathlib import Path

import pytest

from annotators.teacher.localserver import RATE_KINDS, running
from pipeline.config import load_config
from pipeline.driver import build
from pipeline.sources import make_source
from sharding.stats import read_records, read_rejects
from sharding.validate import validate_dataset
from tests.conftest import REPO
from tests.reliability.conftest import CHAOS, trials

KEY_ENV, KEY = "TWIG_FAULTS_KEY", "sk-faults-7d1e4b9a0c2f5e8d3b6a"
TIMEOUT_S, MAX_RETRIES = 1.0, 3  # per attempt; retries after the first attempt
BACKOFF_BASE_S, BACKOFF_MAX_S, RETRY_AFTER_S = 0.05, 0.2, 0.2
HANG_S = 120.0  # far past the timeout: a run that waited on a hang would blow the bound
N_PROMPTS, UNIT, CONCURRENCY, BANDS = 24, 12, 48, 3

# What a reject caused by each kind must say (after "teacher <role>: ", or at prepare for a
# truncated image). A request that fails every attempt gives up with its last error.
GAVE_UP = r"gave up after \d+ attempts: "
REASONS = {
    "429": [GAVE_UP + r"HTTP 429: Rate limit reached"],
    "500": [GAVE_UP + r"HTTP 500: The server had an error"],
    "hang": [GAVE_UP + rf"timed out after {TIMEOUT_S:g}s"],
    "reset": [GAVE_UP + r"connection error \((ConnectionResetError|ContentLengthError|"
              r"ClientPayloadError|ServerDisconnectedError)\)"],
    "malformed": [r"invalid answer after one repair: ", GAVE_UP + r"unreadable response body"],
    "length": [r"truncated answer \(finish_reason=length\)",
               r"^cannot decode image: image file is truncated"],
    "refusal": [r"refused: I'm sorry", r"image request refused \(HTTP 400\): .*safety system"],
}
NOT_FAULTS = re.compile(r"^(duplicate_prompt|near_duplicate_image)")  # the filter's own drops

COLORS = ["red", "blue", "green", "yellow", "purple", "orange"]
THINGS = ["cube", "vase", "bicycle", "lamp", "apple", "kite", "boat", "chair"]


def matrix() -> list[tuple[float, str, int]]:
    """(rate, kinds, seed): CI a subset that covers every kind; chaos every cell, several seeds."""
    kinds = [*RATE_KINDS, "mixed"]
    if not CHAOS:
        return [(0.0, "mixed", 0), *[(0.3, k, 0) for k in RATE_KINDS], (0.5, "mixed", 0)]
    seeds = range(trials(1, 3))
    return [(0.0, "mixed", 0)] + [(r, k, s) for r in (0.1, 0.3, 0.5) for k in kinds for s in seeds]


def prompts_file(path: Path) -> list[str]:
    lines = [f"a {COLORS[i % 6]} {THINGS[i % 8]} beside a {COLORS[(i // 6 + 2) % 6]} "
             f"{THINGS[(i // 8 + 3) % 8]}, view {i}" for i in range(N_PROMPTS)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def stats_of(url: str) -> dict:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/_stats", timeout=10) as r:
        return json.loads(r.read())


def time_bound(units: int) -> float:
    """The longest a run may take. A sample's critical path is 5 sends (bands + its repair, the
    image, a reflection + its repair; the K reflections go out together); each send takes at
    most (1 + max_retries) timeouts plus a backoff or Retry-After wait between attempts. Units
    run one after another (one worker); a unit's samples are all in flight at once (the window
    and the endpoint's concurrency cover them). Plus start-up and finalize."""
    per_send = (MAX_RETRIES + 1) * TIMEOUT_S + MAX_RETRIES * max(BACKOFF_MAX_S, RETRY_AFTER_S)
    return units * 5 * per_send + 20.0


@pytest.mark.timeout(900 if CHAOS else 150)
@pytest.mark.parametrize("rate, kinds, seed", matrix(),
                         ids=lambda v: str(v) if not isinstance(v, float) else f"{v:.0%}")
def test_build_under_teacher_faults(rate, kinds, seed, tmp_path, monkeypatch, figures):
    monkeypatch.setenv(KEY_ENV, KEY)
    kind_list = list(RATE_KINDS) if kinds == "mixed" else [kinds]
    prompt_lines = prompts_file(tmp_path / "mixed_train.txt")
    out = tmp_path / "out"
    server_args = ["--api-key", KEY, "--fault-rate", str(rate), "--fault-kinds", ",".join(kind_list),
                   "--fault-seed", str(seed), "--hang-s", str(HANG_S),
                   "--retry-after-s", str(RETRY_AFTER_S), "--max-image-side", "768"]
    with running(*server_args) as url:
        config = load_config(REPO / "configs" / "prompt-first.yaml", [
            f"source.prompts=['{tmp_path / 'mixed_train.txt'}']", "teacher.model=gpt-4o-mini",
            "teacher.image.size=256x256", f"segment.bands={BANDS}", f"shard.max_records={UNIT}",
            f"run.out={out}", "run.progress=false", "run.workers=1",
            f"endpoints.default.base_url={url}", f"endpoints.default.api_key_env={KEY_ENV}",
            f"endpoints.default.timeout_s={TIMEOUT_S}", f"endpoints.default.max_retries={MAX_RETRIES}",
            f"endpoints.default.backoff_base_s={BACKOFF_BASE_S}",
            f"endpoints.default.backoff_max_s={BACKOFF_MAX_S}",
            f"endpoints.default.concurrency={CONCURRENCY}",
            "endpoints.default.requests_per_minute=6000", "endpoints.default.tokens_per_minute=null"])
        inputs = {it.key: it.uri for it in make_source(config).items()}
        assert len(inputs) == len(prompt_lines) == N_PROMPTS
        t0 = time.monotonic()
        result = build(config)
        seconds = time.monotonic() - t0
        server = stats_of(url)
    where = f"rate={rate} kinds={kinds} seed={seed}"

    # bounded in time and in retries
    bound = time_bound(result.units)
    assert seconds <= bound, f"{where}: run took {seconds:.1f}s > bound {bound:.1f}s"
    assert server["max_attempts"] <= MAX_RETRIES + 1, (where, server)
    stats = json.loads((out / "stats.json").read_text())
    last = stats["teacher"]["last_run"]
    assert last["requests"] == server["requests"], (where, last, server)
    assert last["retries"] == server["requests"] - server["bodies"], (where, last, server)
    injected = {k: server.get(f"injected_{k}", 0) for k in RATE_KINDS}
    assert set(k for k, n in injected.items() if n) <= set(kind_list), (where, injected)
    if rate == 0:
        assert sum(injected.values()) == 0 and last["retries"] == 0
    elif kinds != "mixed":
        assert injected[kinds] > 0, f"{where}: no fault injected"

    # every input is one record or one reject, and the counts add up
    manifest = json.loads((out / "manifest.json").read_text())
    records = read_records(out, [s["path"] for s in manifest["shards"]])
    rejects = read_rejects(out, [p.stem for p in (out / "rejects").glob("*.jsonl")])
    written = [r.key for r in records]
    rejected = [r["key"] for r in rejects]
    assert len(written) == len(set(written)) and len(rejected) == len(set(rejected)), where
    assert not set(written) & set(rejected), where
    assert set(written) | set(rejected) == set(inputs), where
    assert stats["read"] == stats["written"]["total"] + stats["rejected"]["total"] == N_PROMPTS
    c = manifest["counts"]
    assert (c["read"], c["written"], c["rejected"]) == (N_PROMPTS, len(written), len(rejected))
    assert validate_dataset(out, check_images=False).ok

    # every reject says why; those the faults caused name the fault
    patterns = [re.compile(p) for k in kind_list for p in REASONS[k]]
    for row in rejects:
        reason = row["reason"]
        assert reason and row["uri"] == inputs[row["key"]], row
        if NOT_FAULTS.match(reason):
            assert row["stage"] == "filter", row
            continue
        assert rate > 0, f"{where}: a reject without any fault: {row}"
        assert row["stage"] in ("guide", "draw", "reflect", "prepare"), row
        assert any(p.search(reason) for p in patterns), f"{where}: reason names no fault: {row}"

    figures.add("faults", "runs")
    figures.add("faults", "inputs", N_PROMPTS)
    figures.add("faults", "written", len(written))
    figures.add("faults", "rejected", len(rejected))
    figures.add("faults", "samples_lost", len(set(inputs) - set(written) - set(rejected)))
    figures.add("faults", "requests", server["requests"])
    figures.add("faults", "retries", last["retries"])
    for k, n in injected.items():
        figures.add("faults", f"injected:{k}", n)
    f = figures.data["faults"]
    figures.set("faults", "max_retries_per_request",
                max(f.get("max_retries_per_request", 0), server["max_attempts"] - 1))
    figures.set("faults", "retry_limit", MAX_RETRIES)
    figures.set("faults", "max_run_s", round(max(f.get("max_run_s", 0.0), seconds), 2))
    figures.set("faults", "run_bound_s", round(bound, 1))
    if rate > 0:
        share = len(rejected) / N_PROMPTS
        figures.set("faults", f"max_reject_share@{rate:.0%}",
                    round(max(f.get(f"max_reject_share@{rate:.0%}", 0.0), share), 3))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", RATE_KINDS)
def test_a_fault_on_every_attempt_is_a_reject_naming_it(kind, tmp_path, monkeypatch, figures):
    """At rate 100% every request fails on every attempt: each input is a reject at the first
    teacher stage, with a reason that names the fault (after max_retries retries for the
    transient kinds); the run still completes and the counts add up."""
    monkeypatch.setenv(KEY_ENV, KEY)
    prompts_file(tmp_path / "mixed_train.txt")
    out = tmp_path / "out"
    with running("--api-key", KEY, "--fault-rate", "1", "--fault-kinds", kind, "--hang-s",
                 str(HANG_S), "--retry-after-s", str(RETRY_AFTER_S)) as url:
        config = load_config(REPO / "configs" / "prompt-first.yaml", [
            f"source.prompts=['{tmp_path / 'mixed_train.txt'}']", "teacher.model=gpt-4o-mini",
            "limit=4", f"run.out={out}", "run.progress=false", "run.workers=1",
            f"endpoints.default.base_url={url}", f"endpoints.default.api_key_env={KEY_ENV}",
            f"endpoints.default.timeout_s={TIMEOUT_S}", "endpoints.default.max_retries=1",
            f"endpoints.default.backoff_base_s={BACKOFF_BASE_S}",
            f"endpoints.default.backoff_max_s={BACKOFF_MAX_S}"])
        build(config)
        server = stats_of(url)
    rows = read_rejects(out, [p.stem for p in (out / "rejects").glob("*.jsonl")])
    assert len(rows) == 4 and json.loads((out / "manifest.json").read_text())["counts"]["written"] == 0
    attempts = 2 if kind in ("429", "500", "hang", "reset") else 1
    expected = {  # the first teacher request of a prompt-first sample is the guide (band captions)
        "429": "teacher guide: gave up after 2 attempts: HTTP 429: Rate limit reached",
        "500": "teacher guide: gave up after 2 attempts: HTTP 500: The server had an error",
        "hang": f"teacher guide: gave up after 2 attempts: timed out after {TIMEOUT_S:g}s",
        "reset": "teacher guide: gave up after 2 attempts: connection error (",
        "malformed": "teacher guide: ",
        "length": "teacher guide: truncated answer (finish_reason=length)",
        "refusal": "teacher guide: refused: I'm sorry",
    }[kind]
    for row in rows:
        assert row["stage"] == "guide" and row["reason"].startswith(expected), row
        assert any(re.search(p, row["reason"]) for p in REASONS[kind]), row
    if kind == "reset":
        assert all("Timeout" not in r["reason"] and "timed out" not in r["reason"] for r in rows)
    assert server["max_attempts"] == (2 if kind == "malformed" else attempts), server
    figures.add("faults", "every_attempt_runs")
    figures.add("faults", "every_attempt_rejects_named", len(rows))


def test_rate_faults_are_seeded_and_a_retry_can_succeed():
    """The same body at the same attempt gets the same fault on every server with the same seed;
    a later attempt draws again (so retries help) and another seed gives other faults."""
    from annotators.teacher.localserver import LocalServer

    def draws(seed: int) -> list[tuple[str | None, int]]:
        srv = LocalServer(fault_rate=0.5, fault_kinds=RATE_KINDS, fault_seed=seed)
        return [srv._draw_fault({"model": "m", "messages": [{"role": "user", "content": f"p{i}"}]})
                for i in range(200) for _ in range(3)]

    a, b, other = draws(1), draws(1), draws(2)
    assert a == b and a != other
    faulted = [k for k, _ in a if k]
    assert 0.4 < len(faulted) / len(a) < 0.6 and set(faulted) == set(RATE_KINDS)
    firsts, seconds = a[0::3], a[1::3]
    assert any(f[0] and not s[0] for f, s in zip(firsts, seconds, strict=True))
    assert math.isclose(len(faulted) / len(a), 0.5, abs_tol=0.1)


@pytest.mark.timeout(120)
def test_an_endpoint_with_no_server_stops_the_run_and_a_rerun_finishes(tmp_path, monkeypatch, figures):
    """A base URL nobody answers on (a closed port): after `unreachable_after` requests in a row got
    no answer, the run stops with one clear line instead of turning every paid-for input into a
    reject, writes no manifest, and the same command finishes once the endpoint is up."""
    import socket
    import subprocess
    import sys

    monkeypatch.setenv(KEY_ENV, KEY)
    prompts_file(tmp_path / "mixed_train.txt")
    out = tmp_path / "out"
    with socket.socket() as s:  # a port that was free a moment ago: connections are refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"

    def run(url: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", "dataset", "--config", str(REPO / "configs" / "prompt-first.yaml"),
             "--out", str(out), "--limit", "16", "--no-progress", "--workers", "1",
             "--set", f"source.prompts=['{tmp_path / 'mixed_train.txt'}']", "--set", "teacher.model=gpt-4o-mini",
             "--set", f"endpoints.default.base_url={url}", "--set", f"endpoints.default.api_key_env={KEY_ENV}",
             "--set", "endpoints.default.max_retries=1", "--set", "endpoints.default.backoff_base_s=0.05",
             "--set", "endpoints.default.backoff_max_s=0.1", "--set", "endpoints.default.unreachable_after=4"],
            cwd=REPO, capture_output=True, text=True, timeout=100)

    t0 = time.perf_counter()
    r = run(dead)
    assert r.returncode == 1, r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("twig: error")]
    assert len(err) == 1 and "is unreachable: 4 requests in a row got no answer" in err[0], r.stderr
    assert "Traceback" not in r.stderr and KEY not in r.stderr
    assert not (out / "manifest.json").exists()
    assert not list((out / "rejects").glob("*.jsonl")) if (out / "rejects").exists() else True
    stopped_s = time.perf_counter() - t0
    with running("--api-key", KEY) as url:
        r = run(url)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["read"] == 16 and m["counts"]["written"] + m["counts"]["rejected"] == 16
    assert not [row for row in read_rejects(out, [p.stem for p in (out / "rejects").glob("*.jsonl")])
                if "connection error" in row["reason"]]
    figures.add("faults", "dead_endpoint_runs")
    figures.set("faults", "dead_endpoint_stop_s", round(stopped_s, 1))
