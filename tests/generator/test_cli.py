"""`twig generate` as a user runs it: prompts in, PNGs + traces out, resumable, clear errors.

Everything runs in-process through `pipeline.cli.main` (the `twig` entry point) with the tiny
random Janus on CPU and tiny settings, so the whole file stays well under a minute.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.cli import main

torch.set_num_threads(1)

TINY = ["--bands", "3", "--guide-tokens", "6", "--reflect-tokens", "6"]
PROMPTS_TXT = "a red cube on a blue sphere\n\n# a comment line\n  two green cats  \nthree yellow stars\n"
PROMPTS = ["a red cube on a blue sphere", "two green cats", "three yellow stars"]
STEMS = ["00000", "00001", "00002"]


def generate(prompts, out: Path, *extra) -> int:
    return main(["generate", "--prompts", str(prompts), "--out", str(out), *TINY, *map(str, extra)])


def traces(out: Path) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob("[0-9]*.json"))]


def pngs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("[0-9]*.png"))}


def mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("[0-9]*.*"))}


def without_timings(trace: dict) -> dict:
    return {k: v for k, v in trace.items() if k != "timings"}


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text(PROMPTS_TXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def drawn(prompts_file, tmp_path_factory) -> Path:
    """The three prompts of `prompts_file`, drawn once with --batch-size 2 (a full and a partial batch)."""
    out = tmp_path_factory.mktemp("drawn") / "out"
    assert generate(prompts_file, out, "--batch-size", 2) == 0
    return out


def test_txt_prompts_give_a_png_and_a_trace_per_prompt(drawn):
    names = sorted(p.name for p in drawn.iterdir())
    assert names == sorted([*(f"{s}.png" for s in STEMS), *(f"{s}.json" for s in STEMS),
                            "contact_sheet.png", "run.json"])
    with Image.open(drawn / "contact_sheet.png") as sheet:
        sheet.load()
        assert sheet.width > 0 and sheet.height > 0
    run = json.loads((drawn / "run.json").read_text())
    assert run["prompts"] == 3 and run["drawn"] == 3 and run["skipped"] == 0
    assert run["model"] == "tiny" and run["device"] == "cpu" and run["batch_size"] == 2

    ts = traces(drawn)
    assert [t["prompt"] for t in ts] == PROMPTS          # blank and `#` lines skipped, text stripped
    assert [t["seed"] for t in ts] == [0, 1, 2]          # --seed 0 + index
    assert [t["index"] for t in ts] == [0, 1, 2]
    for stem, t in zip(STEMS, ts, strict=True):
        assert t["key"] is None and t["model"] == "tiny"
        img = t["image"]
        assert img["file"] == f"{stem}.png"
        with Image.open(drawn / img["file"]) as png:
            png.load()
            assert png.mode == "RGB"
            assert png.size == (img["width"], img["height"])
        assert img["grid"] == [24, 24]
        tokens = [int(x) for x in img["tokens"].split()]
        assert len(tokens) == 576 and all(x >= 0 for x in tokens)
        bands = t["bands"]
        assert [b["index"] for b in bands] == [0, 1, 2]
        assert bands[0]["rows"][0] == 0 and bands[-1]["rows"][1] == 24
        for a, b in zip(bands, bands[1:], strict=False):
            assert a["rows"][1] == b["rows"][0]
        for b in bands:
            assert b["rows"][0] < b["rows"][1]
            assert isinstance(b["guide"], str)
            assert isinstance(b["regenerated"], bool)
            refl = b["reflection"]
            assert isinstance(refl, dict) and isinstance(refl["text"], str)
            assert {"score", "revised_guide", "parsed"} <= set(refl)
            if b["regenerated"]:
                assert b["first_attempt"] is not None and b["first_draw_tokens"]
        s = t["settings"]
        assert s["bands"] == 3 and s["guide_tokens"] == 6 and s["reflect_tokens"] == 6
        assert s["think"] and s["reflect"] and s["cfg"] == 5.0 and s["layout"] == "interleaved"
        timings = t["timings"]
        assert timings["batch_size"] in (1, 2)
        assert timings["total_s"] > 0 and timings["draw_s"] > 0
    assert [t["timings"]["batch_size"] for t in ts] == [2, 2, 1]


def test_rerun_resumes_and_redraws_only_what_is_missing_or_changed(drawn, prompts_file, tmp_path,
                                                                  caplog):
    caplog.set_level(logging.INFO, logger="twig")
    out = tmp_path / "out"
    shutil.copytree(drawn, out)
    first_pngs, first_traces = pngs(out), traces(out)
    sheet = (out / "contact_sheet.png").read_bytes()
    before = mtimes(out)

    # the same command again: nothing to draw, nothing rewritten
    assert generate(prompts_file, out, "--batch-size", 2) == 0
    assert "already drawn" in caplog.text
    assert mtimes(out) == before and pngs(out) == first_pngs
    assert (out / "contact_sheet.png").read_bytes() == sheet

    # one image lost: only it is drawn again, to the same bytes (same seed, same image)
    (out / "00001.png").unlink()
    caplog.clear()
    assert generate(prompts_file, out, "--batch-size", 2) == 0
    after = mtimes(out)
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {"00001.png", "00001.json"}
    assert pngs(out) == first_pngs
    assert [without_timings(t) for t in traces(out)] == [without_timings(t) for t in first_traces]
    run = json.loads((out / "run.json").read_text())
    assert run["prompts"] == 3 and run["drawn"] == 1 and run["skipped"] == 2

    # a changed setting: everything is drawn again
    before = mtimes(out)
    assert generate(prompts_file, out, "--batch-size", 2, "--cfg", 3) == 0
    after = mtimes(out)
    assert all(after[name] != before[name] for name in before)
    run = json.loads((out / "run.json").read_text())
    assert run["drawn"] == 3 and run["skipped"] == 0
    assert all(t["settings"]["cfg"] == 3.0 for t in traces(out))
    assert pngs(out) != first_pngs


def test_batch_size_does_not_change_the_images(drawn, prompts_file, tmp_path):
    one, three = tmp_path / "b1", tmp_path / "b3"
    assert generate(prompts_file, one, "--batch-size", 1) == 0
    assert generate(prompts_file, three, "--batch-size", 3) == 0
    assert len(pngs(one)) == 3
    assert pngs(one) == pngs(three) == pngs(drawn)
    assert [without_timings(t) for t in traces(one)] == [without_timings(t) for t in traces(three)]


def test_jsonl_seeds_and_given_guides_are_used(tmp_path):
    guides = [["  A warm sky with a yellow sun. ", "Green hills below.", "A red cube\n on the grass."],
              ["Night sky.", "A lake.", "A boat."]]
    lines = [{"prompt": "a red cube in a meadow", "seed": 41, "guides": guides[0], "key": "k-41"},
             {"prompt": "a boat on a lake", "seed": 7, "guides": guides[1]},
             {"prompt": "a plain prompt with a seed only", "seed": 3}]
    src = tmp_path / "prompts.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    out = tmp_path / "out"
    assert generate(src, out, "--batch-size", 3, "--seed", 100) == 0
    ts = traces(out)
    assert [t["seed"] for t in ts] == [41, 7, 3]
    assert [t["prompt"] for t in ts] == [x["prompt"] for x in lines]
    assert [t["key"] for t in ts] == ["k-41", None, None]
    for t, given in zip(ts, guides, strict=False):
        for band, text in zip(t["bands"], given, strict=True):
            want = " ".join(text.split())
            written = band["first_attempt"]["guide"] if band["regenerated"] else band["guide"]
            assert written == want
            assert not band["guide_truncated"]
    assert all(isinstance(b["guide"], str) for b in ts[2]["bands"])


def test_a_prompt_text_draws_one_image(tmp_path):
    out = tmp_path / "out"
    assert generate("a red cube on a blue sphere", out, "--batch-size", 2) == 0
    ts = traces(out)
    assert len(ts) == 1 and list(pngs(out)) == ["00000.png"]
    assert ts[0]["prompt"] == "a red cube on a blue sphere" and ts[0]["seed"] == 0


def _write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


ERRORS = {
    "missing file": (lambda d: "nope/prompts.txt", [], ["no such prompts file", "nope/prompts.txt"]),
    "empty file": (lambda d: _write(d, "empty.txt", "\n# only a comment\n\n"), [], ["holds no prompts"]),
    "not utf-8": (lambda d: _write(d, "latin.txt", "caf\u00e9 au lait\n".encode("latin-1")), [],
                  ["latin.txt", "not UTF-8"]),
    "bad json": (lambda d: _write(d, "bad.jsonl", '{"prompt": "ok"}\n{"prompt": oops}\n'), [],
                 ["bad.jsonl:2", "not JSON"]),
    "no prompt": (lambda d: _write(d, "np.jsonl", '{"prompt": "ok"}\n\n{"seed": 3}\n'), [],
                  ["np.jsonl:3", "'prompt'"]),
    "guide count": (lambda d: _write(d, "g.jsonl", json.dumps({"prompt": "two bands", "guides": ["a", "b"]})),
                    [], ["2 guides", "3 bands"]),
    "unknown model": (lambda d: "a cat", ["--model", "not-a-model"], ["unknown model", "not-a-model"]),
    "folder without config": (lambda d: "a cat", ["--model", "{d}/empty-model"], ["no config.json"]),
    "no cuda": (lambda d: "a cat", ["--device", "cuda"], ["--device cuda", "no CUDA GPU"]),
    "batch size 0": (lambda d: "a cat", ["--batch-size", "0"], ["--batch-size", ">= 1"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_mistakes_are_one_clear_line_with_exit_code_2(case, tmp_path, monkeypatch, capsys):
    if case == "no cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible here")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty-model").mkdir()
    make, extra, words = ERRORS[case]
    prompts = make(tmp_path)
    argv = ["generate", "--prompts", str(prompts), "--out", str(tmp_path / "out"), *TINY,
            *(x.format(d=tmp_path) for x in extra)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("twig: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]
    assert not list((tmp_path / "out").glob("*.png"))


def test_local_checkpoint_folder_draws_what_the_builtin_tiny_model_draws(drawn, prompts_file, tmp_path):
    from generator.model import save_tiny

    ckpt = save_tiny(tmp_path / "ckpt")
    out = tmp_path / "out"
    assert generate(prompts_file, out, "--model", ckpt, "--limit", 2, "--batch-size", 2) == 0
    got = pngs(out)
    assert sorted(got) == ["00000.png", "00001.png"]
    want = pngs(drawn)
    assert got == {name: want[name] for name in got}
    ts = traces(out)
    assert all(t["model"] == str(ckpt) for t in ts)
    assert [t["image"]["tokens"] for t in ts] == [t["image"]["tokens"] for t in traces(drawn)[:2]]


def test_dataset_folder_as_prompts(tmp_path, small_config):
    from pipeline.driver import build
    from sharding.stats import read_records

    ds = tmp_path / "ds"
    build(small_config(ds, **{"source.count": 8, "run.workers": 1}))
    manifest = json.loads((ds / "manifest.json").read_text())
    records = read_records(ds, [s["path"] for s in manifest["shards"]])
    assert len(records) >= 6
    out = tmp_path / "out"
    assert generate(ds, out, "--batch-size", len(records)) == 0
    ts = traces(out)
    assert len(ts) == len(records) and len(pngs(out)) == len(records)
    by_key = {rec.key: rec for rec in records}
    assert sorted(t["key"] for t in ts) == sorted(by_key)
    for t in ts:
        rec = by_key[t["key"]]
        assert t["prompt"] == rec.prompt
        for band, region in zip(t["bands"], rec.regions, strict=True):
            want = " ".join(region.guide.split())
            written = band["first_attempt"]["guide"] if band["regenerated"] else band["guide"]
            assert written == want
