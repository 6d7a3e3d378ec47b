"""Both teacher recipes end to end through `twig dataset`, against a real local HTTP server that
speaks the OpenAI chat-completions and images protocols (the stand-in for a remote endpoint) and
injects faults. Covers: the run completes, every failure is a reject with its reason, nothing is
written twice, a re-run makes zero requests and writes byte-identical shards, and the API key
never reaches any output, log or error message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from PIL import Image

from sharding.stats import read_records, read_rejects
from tests.conftest import REPO, TEST_KEY, TWIG

CLEAN = ["a green bench and a red car", "two cups", "a fish behind a butterfly",
         "a diamond tiara and a round bracelet", "a wooden table and a glass vase",
         "a blue sky above a yellow field"]
FAULTS = {  # prompt -> the reject reason it must produce (None: it must get through)
    "a red cube fault:429": None,
    "a blue ball fault:500": None,
    "a green cup fault:hang": None,
    "a cat on a mat fault:malformed1": None,
    "a dog on a sofa fault:malformed": "teacher guide: invalid answer after one repair",
    "a car in the rain fault:length": "teacher guide: truncated answer (finish_reason=length)",
    "a tree by a lake fault:refusal": "teacher guide: refused: I'm sorry",
}


def twig(server, out: Path, *args: str, key: str = TEST_KEY) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": key}
    return subprocess.run([*TWIG, "dataset", "--out", str(out), "--no-progress", "--workers", "2",
                           "--set", "shard.max_records=5", "--set", "endpoints.default.timeout_s=1.5",
                           "--set", "endpoints.default.backoff_base_s=0.05",
                           "--set", "teacher.image.size=256x256", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def prompt_first(server, tmp: Path, out: Path, lines: list[str], *args: str, key: str = TEST_KEY):
    (tmp / "mixed_train.txt").write_text("\n".join(lines) + "\n")
    return twig(server, out, "--recipe", "prompt-first", "--model", "gpt-4o-mini",
                "--set", f"source.prompts=['{tmp}/mixed_train.txt']", *args, key=key)


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}


def test_prompt_first_survives_faults_and_reruns_from_cache(local_openai, tmp_path):
    out = tmp_path / "out"
    lines = CLEAN + list(FAULTS)
    r = prompt_first(local_openai, tmp_path, out, lines)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    records = read_records(out, [s["path"] for s in manifest["shards"]])
    rejects = read_rejects(out, [p.stem for p in (out / "rejects").glob("*.jsonl")])
    # nothing written twice, nothing lost: every input is exactly one record or one reject
    keys = [x.key for x in records] + [x["key"] for x in rejects]
    assert len(keys) == len(set(keys)) == len(lines)
    got = {x.prompt for x in records}
    assert got == set(CLEAN) | {p for p, why in FAULTS.items() if why is None}
    by_uri = {x["uri"]: x for x in rejects}
    for n, (_prompt, why) in enumerate(FAULTS.items(), len(CLEAN) + 1):
        if why:
            row = by_uri[f"mixed_train.txt:{n}"]
            assert row["stage"] == "guide" and row["reason"].startswith(why), row
    for rec in records:
        assert rec.category == "mixed" and len(rec.regions) == 3
        assert all(reg.guide and reg.reflection is not None for reg in rec.regions)
        assert rec.teacher.guide.prompt_version == "bands.v1" and rec.teacher.guide.usage.calls >= 1
        repaired = "malformed1" in rec.prompt  # every request of this one needed a repair round
        assert rec.teacher.image.model == "gpt-image-1"
        assert rec.teacher.reflect.usage.calls == (6 if repaired else 3)
        for reg in rec.regions:  # a kept band keeps its guide, as in TwiG-50K
            assert reg.reflection.accepted == (reg.reflection.score > 90)
            if reg.reflection.accepted:
                assert reg.reflection.revised_guide == reg.guide
    stats = json.loads((out / "stats.json").read_text())
    t = stats["teacher"]
    assert set(t["by_role"]) == {"guide/gpt-4o-mini", "image/gpt-image-1", "reflect/gpt-4o-mini"}
    assert t["cost_usd"] > 0 and t["last_run"]["retries"] > 0 and t["last_run"]["cache_hits"] == 0
    assert "Teacher cost" in (out / "README.md").read_text()
    first = shard_bytes(out)

    # a second run on the same input: from the cache, zero requests, byte-identical shards
    for name in ("shards", "rejects", ".progress"):
        shutil.rmtree(out / name)
    (out / "manifest.json").unlink()
    before = local_openai.requests()
    r = prompt_first(local_openai, tmp_path, out, lines)
    assert r.returncode == 0, r.stderr
    assert local_openai.requests() == before
    assert shard_bytes(out) == first
    again = json.loads((out / "stats.json").read_text())["teacher"]
    assert again["by_role"] == t["by_role"] and again["last_run"]["requests"] == 0
    assert again["last_run"]["cache_hits"] > 0


def test_exhausted_retries_become_rejects_and_the_run_goes_on(local_openai, tmp_path):
    out = tmp_path / "out"
    lines = ["a house fault:always500", "a red apple", "a boat fault:always500"]
    before = local_openai.stats().get("fault_always500", 0)
    r = prompt_first(local_openai, tmp_path, out, lines, "--set", "endpoints.default.max_retries=2")
    assert r.returncode == 0, r.stderr
    assert local_openai.stats()["fault_always500"] - before == 2 * 3  # bounded: 1 try + 2 retries
    rows = read_rejects(out, [p.stem for p in (out / "rejects").glob("*.jsonl")])
    assert sorted(x["reason"] for x in rows) == [
        "teacher guide: gave up after 3 attempts: HTTP 500: The server had an error while "
        "processing your request."] * 2
    assert json.loads((out / "manifest.json").read_text())["counts"]["written"] == 1


def test_image_first_with_teacher_caption_guide_reflect_and_judge(local_openai, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, color in enumerate(["red", "green", "blue", "orange"]):
        Image.new("RGB", (500 + 40 * i, 400), color).save(images / f"{i}.jpg")
    out = tmp_path / "out"
    r = twig(local_openai, out, "--recipe", "image-first", "--model", "gpt-4o",
             "--set", f"source.path={images}", "--set", "annotate.judge=teacher",
             "--set", "filter.near_dup_hamming=null")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"] == ["prepare", "caption", "segment", "guide", "reflect", "judge", "filter"]
    records = read_records(out, [s["path"] for s in manifest["shards"]])
    assert len(records) == 4
    for rec in records:
        assert rec.prompt and rec.teacher.caption.prompt_version == "caption.v1"
        assert rec.teacher.guide.usage.calls == 3  # one request per band, in order
        assert rec.filters.judge_score is not None
        assert rec.source.kind == "folder"


def test_api_key_never_reaches_outputs_logs_or_errors(local_openai, tmp_path):
    out = tmp_path / "out"
    r = prompt_first(local_openai, tmp_path, out, CLEAN[:3] + ["a car in the rain fault:length"], "-v")
    assert r.returncode == 0, r.stderr
    secret_parts = [TEST_KEY, TEST_KEY[-12:], TEST_KEY[3:15]]
    texts = [r.stdout, r.stderr]
    texts += [p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file()]
    for text in texts:
        for part in secret_parts:
            assert part not in text
    # a wrong key stops the run with a clear message that shows neither key
    wrong = "sk-wrong-0123456789abcdef0123"
    bad = prompt_first(local_openai, tmp_path, tmp_path / "bad", ["a new prompt"], key=wrong)
    assert bad.returncode == 1
    assert "refused the API key (HTTP 401)" in bad.stderr and "OPENAI_API_KEY" in bad.stderr
    for part in [wrong, wrong[-4:], TEST_KEY[-4:]]:
        assert part not in bad.stderr + bad.stdout


def test_missing_model_or_key_fails_before_any_work(local_openai, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    r = subprocess.run([*TWIG, "dataset", "--recipe", "prompt-first", "--out", str(tmp_path / "o")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "needs a model" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*TWIG, "dataset", "--recipe", "prompt-first", "--model", "m", "--out",
                        str(tmp_path / "o")], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no API key" in r.stderr and "OPENAI_API_KEY" in r.stderr
