"""End to end on the local engine: what a user gets from `twig dataset`, re-runs and kills."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.driver import build
from sharding.reader import iter_samples
from sharding.validate import validate_dataset
from tests.conftest import REPO, TWIG


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file a user sees (shards, rejects, manifest, stats, card)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(".progress"):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from pipeline.config import load_config

    out = tmp_path_factory.mktemp("ds") / "out"
    cfg = load_config(None, ["source.count=60", "shard.max_records=16", "run.progress=false",
                             f"run.out={out}", "source.defect_rate=0.4"])
    result = build(cfg)
    return out, result


def test_build_writes_a_valid_dataset_with_tiled_regions(built):
    out, result = built
    manifest = json.loads((out / "manifest.json").read_text())
    assert result.manifest == manifest
    assert manifest["complete"] and manifest["schema"] == "twig/v1"
    c = manifest["counts"]
    assert c["read"] == 60 and c["written"] + c["rejected"] == 60 and c["written"] > 45
    assert manifest["splits"]["train"]["records"] > 0
    report = validate_dataset(out)
    assert report.ok, report.summary()
    import webdataset as wds

    recs = [s["json"] for s in wds.WebDataset(sorted(glob.glob(str(out / "shards/*.tar"))),
                                              shardshuffle=False).decode()]
    assert len(recs) == c["written"]
    low = 0
    for rec in recs:
        assert [r["rows"] for r in rec["regions"]] == [[0, 8], [8, 16], [16, 24]]
        for r in rec["regions"]:
            assert r["guide"].strip() and r["reflection"]["critique"].strip()
            for word in ("top", "middle", "bottom"):
                assert word not in r["guide"].lower().split()
            if r["reflection"]["score"] <= 90:
                low += 1
                assert not r["reflection"]["accepted"]
                assert r["reflection"]["revised_guide"] != r["guide"]
    assert low > 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["tasks"]["total"] == manifest["counts"]["tasks"]
    assert stats["tasks"]["think"] == 3 * c["written"]


def test_reads_with_datasets_both_ways(built):
    import datasets

    out, _ = built
    manifest = json.loads((out / "manifest.json").read_text())
    ds = datasets.load_dataset(str(out))
    assert ds["train"].num_rows == manifest["splits"]["train"]["records"]
    if manifest["splits"]["val"]["records"]:
        assert ds["val"].num_rows == manifest["splits"]["val"]["records"]
    row = ds["train"][0]
    assert row["jpg"].size == (384, 384) and row["json"]["schema"] == "twig/v1"
    files = sorted(glob.glob(str(out / "shards/train-*.tar")))
    flat = datasets.load_dataset("webdataset", data_files={"train": files}, split="train")
    assert flat.num_rows == manifest["splits"]["train"]["records"]


def test_rerun_on_finished_output_rewrites_nothing(built):
    out, first = built
    from pipeline.config import load_config

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    cfg = load_config(None, ["source.count=60", "shard.max_records=16", "run.progress=false",
                             f"run.out={out}", "source.defect_rate=0.4"])
    again = build(cfg)
    assert again.up_to_date and again.ran == 0
    assert again.seconds < first.seconds / 3
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_lost_unit_is_rebuilt_byte_identical(built, tmp_path, small_config):
    out, _ = built
    from pipeline.config import load_config

    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    expected = snapshot(copy)
    (copy / ".progress" / "train-00001.json").unlink()
    (copy / "shards" / "train-00001.tar").unlink()
    (copy / "manifest.json").unlink()
    cfg = load_config(None, ["source.count=60", "shard.max_records=16", "run.progress=false",
                             f"run.out={copy}", "source.defect_rate=0.4"])
    result = build(cfg)
    assert result.ran == 1
    assert snapshot(copy) == expected


def test_worker_count_does_not_change_bytes(tmp_path, small_config):
    a, b = tmp_path / "a", tmp_path / "b"
    build(small_config(a, **{"run.workers": 1}))
    build(small_config(b, **{"run.workers": 2, "shard.max_records": 16}))
    assert snapshot(a) == snapshot(b)


def _cmd(out: Path) -> list[str]:
    return [*TWIG, "dataset", "--out", str(out), "--no-progress", "--workers", "2",
            "--set", "source.count=160", "--set", "shard.max_records=10"]


def test_sigkill_at_any_moment_resumes_to_identical_output(tmp_path):
    ref = tmp_path / "ref"
    subprocess.run(_cmd(ref), check=True, cwd=REPO, capture_output=True)
    expected = snapshot(ref)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for trial, delay in enumerate((0.8, 1.6, 2.4, 3.2)):
        out = tmp_path / f"kill{trial}"
        proc = subprocess.Popen(_cmd(out), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        import tarfile

        for tar in (out / "shards").glob("*.tar") if (out / "shards").exists() else []:
            with tarfile.open(tar) as t:  # a final name is never a partial tar
                assert t.getmembers()
        subprocess.run(_cmd(out), check=True, cwd=REPO, capture_output=True)
        assert snapshot(out) == expected, f"trial {trial} (kill after {delay}s)"
        assert not list(out.rglob(".*.tmp-*"))


def test_validate_reports_a_corrupt_shard(built, tmp_path):
    out, _ = built
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    shard = copy / "shards" / "train-00000.tar"
    data = bytearray(shard.read_bytes())
    data[5000] ^= 0xFF
    shard.write_bytes(bytes(data))
    proc = subprocess.run([*TWIG, "validate", str(copy)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    assert "train-00000.tar" in proc.stdout and "sha256" in proc.stdout


def test_config_mistake_is_one_clear_line_without_traceback(tmp_path):
    proc = subprocess.run([*TWIG, "dataset", "--out", str(tmp_path / "x"), "--set", "segment.bandz=3"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert "segment.bandz: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([*TWIG, "dataset", "--config", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "config file not found" in proc.stderr


def test_limit_and_until_prepare(tmp_path, small_config):
    out = tmp_path / "p"
    result = build(small_config(out, limit=20, until="prepare"))
    m = result.manifest
    assert m["counts"]["read"] == 20 and not m["complete"] and m["stages"] == ["prepare"]
    assert validate_dataset(out).ok
    rec = json.loads(next(iter_samples(out / m["shards"][0]["path"]))["json"])
    assert rec["regions"] == [] and len(rec["image"]["sha256"]) == 64


def test_cli_tasks_counts_and_writes_instances(built, tmp_path):
    out, _ = built
    dest = tmp_path / "tasks.jsonl"
    proc = subprocess.run([*TWIG, "tasks", str(out), "--out", str(dest)], capture_output=True,
                          text=True, cwd=REPO, check=True)
    assert "think_1" in proc.stdout and "generate_3" in proc.stdout
    rows = [json.loads(x) for x in dest.read_text().splitlines()]
    stats = json.loads((out / "stats.json").read_text())
    assert len(rows) == stats["tasks"]["total"]
    assert {r["task"] for r in rows} == {"think", "reflect", "generate"}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
