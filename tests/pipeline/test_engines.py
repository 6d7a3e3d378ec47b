"""The Beam and Ray engines against the local one: the same config and inputs give byte-identical
datasets (every file: shards, manifest, stats, card figures, rejects, markers, and the card but for
the line naming the engine), on Beam's FnApiRunner with
worker processes and on a real two-node Ray cluster on 127.0.0.1, also when a Ray worker is killed
mid-unit and when a run resumes on another engine. The teacher recipe runs through every engine
against the local OpenAI-compatible server (a real HTTP server standing in for a remote API)."""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.driver import build
from pipeline.engines import EngineError
from pipeline.plan import make_plan
from pipeline.sources import make_source
from tests.conftest import REPO, TEST_KEY

SETS = ["source.count=160", "shard.max_records=20", "run.workers=2", "run.progress=false"]


def config(out: Path, *sets: str):
    return load_config(None, [*SETS, f"run.out={out}", *sets])


def tree(out: Path) -> dict[str, bytes]:
    """Every file's bytes; the card's one line naming the engine that ran the build is masked."""
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    if "README.md" in files:
        files["README.md"], n = re.subn(rb"run on the `\w+` engine", b"run on the `*` engine",
                                        files["README.md"])
        assert n == 1, "the card names the engine once"
    return files


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("local") / "out"
    build(config(out))
    return tree(out)


def _processes(prefix: bytes, needle: bytes = b"") -> set[int]:
    found = set()
    for pid in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if pid.isdigit() and cmd.startswith(prefix) and needle in cmd:
            found.add(int(pid))
    return found


def test_beam_multiprocessing_matches_local(reference, tmp_path, caplog):
    out = tmp_path / "beam"
    seen: set[int] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.update(_processes(b"", b"pipeline.engines.beam_worker"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with caplog.at_level(logging.INFO, logger="twig"):
            build(config(out, "run.engine=beam", "run.beam.running_mode=multi_processing"))
    finally:
        stop.set()
        watcher.join(5)
    assert "FnApiRunner (multi_processing, 2 workers)" in caplog.text
    assert len(seen) >= 2  # SDK worker processes, not threads in this one
    assert tree(out) == reference
    assert not (out / ".staging").exists()


def test_ray_two_node_cluster_matches_local(ray_cluster, reference, tmp_path, caplog):
    out = tmp_path / "ray"
    with caplog.at_level(logging.INFO, logger="twig"):
        build(config(out, "run.engine=ray", f"run.ray.address={ray_cluster.address}"))
    assert "on 2 node(s)" in caplog.text  # both nodes computed units
    assert tree(out) == reference


def _kill_first_unit_task(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Ray worker seen running a unit (process title `ray::compute_unit`)."""
    while not stop.is_set():
        for pid in _processes(b"ray::compute_unit"):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.02)


def test_ray_worker_killed_mid_unit_is_retried(ray_cluster, reference, tmp_path, caplog):
    out = tmp_path / "ray-kill"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_unit_task, args=(killed, stop), daemon=True)
    killer.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="twig"):
            build(config(out, "run.engine=ray", f"run.ray.address={ray_cluster.address}"))
    finally:
        stop.set()
        killer.join(5)
    assert killed, "no unit task was seen running"
    # the driver submits each unit once; the killed worker delivered none, yet every unit is done:
    # Ray ran the killed unit again on another worker
    done = [r.getMessage() for r in caplog.records if " done on node " in r.getMessage()]
    assert len(done) == len([k for k in reference if k.startswith(".progress/")])
    assert not any(m.endswith(f"pid {killed[0]}") for m in done)
    assert tree(out) == reference


def _drop_units(src: dict[str, bytes], out: Path, units: tuple[str, ...]) -> None:
    """Write a dataset as a run killed before `units` committed would have left it."""
    for rel, data in src.items():
        if rel == "manifest.json" or any(u in rel for u in units):
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)


@pytest.mark.parametrize("engine", ["beam", "ray"])
def test_resume_on_another_engine_redoes_only_missing_units(engine, request, reference, tmp_path):
    sets = ["run.engine=beam"] if engine == "beam" else \
        ["run.engine=ray", f"run.ray.address={request.getfixturevalue('ray_cluster').address}"]
    out = tmp_path / "resume"
    _drop_units(reference, out, ("train-00002", "train-00005"))
    result = build(config(out, *sets))
    assert result.ran == 2 and result.units == len([k for k in reference if k.startswith(".progress/")])
    assert tree(out) == reference


def test_beam_commits_units_a_killed_driver_left_staged(reference, tmp_path, caplog):
    from pipeline.engines.beam import _name, _put
    from pipeline.runner import UnitRunner

    out = tmp_path / "staged"
    _drop_units(reference, out, ("train-00001",))
    cfg = config(out, "run.engine=beam")
    unit = next(u for u in make_plan(make_source(cfg).items(), cfg.digest(), 20) if u.id == "train-00001")
    staging = str(out / ".staging")
    os.makedirs(staging)
    _put(staging, _name(unit) + ".unit", pickle.dumps(UnitRunner(cfg, out).compute(unit)))
    with caplog.at_level(logging.INFO, logger="twig"):
        result = build(cfg)
    assert result.ran == 1  # committed, never computed again: no pipeline started
    assert "committed 1 unit(s) a previous run had staged" in caplog.text
    assert "units on FnApiRunner" not in caplog.text
    assert tree(out) == reference


def test_ray_refuses_a_unit_the_cluster_cannot_hold(ray_cluster, tmp_path):
    with pytest.raises(EngineError, match=r"needs \{'GPU': 1.0\}"):
        build(config(tmp_path / "gpu", "run.engine=ray", f"run.ray.address={ray_cluster.address}",
                     "run.ray.num_gpus=1"))


def test_ray_custom_resources_pin_units_to_a_node(ray_cluster, reference, tmp_path, caplog):
    out = tmp_path / "pinned"
    with caplog.at_level(logging.INFO, logger="twig"):
        build(config(out, "run.engine=ray", f"run.ray.address={ray_cluster.address}",
                     "run.ray.resources={node_b: 1}"))
    assert "up to 1 at once" in caplog.text and "on 1 node(s)" in caplog.text
    assert tree(out) == reference


# --- the teacher recipe on every engine -------------------------------------------------------

PROMPTS = ["a green bench and a red car", "two cups on a table", "a fish behind a butterfly",
           "a wooden table and a glass vase", "a blue sky above a yellow field", "three red apples",
           "a cat to the left of a dog", "a metal spoon in a ceramic bowl"]


def teacher_config(server, tmp: Path, out: Path, *sets: str):
    prompts = tmp / "engines_train.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    return load_config(REPO / "configs" / "prompt-first.yaml", [
        f"source.prompts=['{prompts}']", "teacher.model=gpt-4o-mini", "teacher.image.size=256x256",
        "shard.max_records=3", "run.workers=2", "run.progress=false", f"run.out={out}",
        f"endpoints.default.base_url={server.url}", *sets])


def test_teacher_recipe_identical_on_every_engine_and_keys_stay_out_of_ray_logs(
        local_openai, ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)  # the driver's only: the Ray nodes have none
    trees = {}
    for engine, sets in {"local": [], "beam": ["run.engine=beam"],
                         "ray": ["run.engine=ray", f"run.ray.address={ray_cluster.address}"]}.items():
        out = tmp_path / engine
        before = local_openai.requests()
        build(teacher_config(local_openai, tmp_path, out, *sets))
        assert local_openai.requests() > before  # each engine asked the server itself (own cache)
        shutil.rmtree(out / "cache")
        trees[engine] = tree(out)
        assert len(list((out / "shards").glob("*.tar"))) >= 2
    assert trees["beam"] == trees["local"] and trees["ray"] == trees["local"]
    for p in ray_cluster.temp_dir.rglob("*"):  # Ray's session logs, spill files, runtime envs
        if p.is_file() and not p.is_socket():
            assert TEST_KEY.encode() not in p.read_bytes(), p


@pytest.mark.parametrize("engine", ["beam", "ray"])
def test_a_refused_key_stops_remote_engines_with_the_teachers_own_message(
        engine, request, local_openai, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-0000")
    sets = ["run.engine=beam"] if engine == "beam" else \
        ["run.engine=ray", f"run.ray.address={request.getfixturevalue('ray_cluster').address}"]
    with pytest.raises(Exception, match=r"refused the API key \(HTTP 401\)") as err:
        build(teacher_config(local_openai, tmp_path, tmp_path / "out", *sets))
    assert getattr(err.value, "fatal", False)
    assert "sk-wrong" not in str(err.value) and "Traceback" not in str(err.value)


def test_a_unit_asks_for_what_its_stages_declare():
    from pipeline.stage import unit_resources
    from pipeline.stages import build_stages

    offline = unit_resources(build_stages(load_config(None, [])))
    assert (offline.cpus, offline.gpus, offline.concurrency) == (1.0, 0.0, None)
    teacher = load_config(REPO / "configs" / "prompt-first.yaml", ["teacher.model=m"])
    assert unit_resources(build_stages(teacher)).cpus == 0.25  # waits on the network


def test_beam_options_pass_through_to_other_runners(tmp_path):
    from pipeline.config import BeamConfig
    from pipeline.engines.beam import pipeline_options, staging_dir

    cfg = BeamConfig(runner="DataflowRunner", options={
        "project": "p", "region": "europe-west4", "temp_location": "gs://b/tmp",
        "experiments": ["use_runner_v2", "x"], "save_main_session": True})
    runner, options = pipeline_options(cfg, 8)
    got = options.get_all_options()
    assert runner == "DataflowRunner"
    assert (got["project"], got["region"], got["temp_location"]) == ("p", "europe-west4", "gs://b/tmp")
    assert {"use_runner_v2", "x"} <= set(got["experiments"]) and got["save_main_session"] is True
    assert staging_dir(cfg, tmp_path) == "gs://b/tmp/twig-staging"
    assert staging_dir(BeamConfig(), tmp_path) == str(tmp_path / ".staging")
