"""The trainer's doors as a user runs them: `twig train`, `twig eval`, `twig tokenize` (tiny models)."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from pipeline.cli import main
from tests.conftest import REPO, TWIG

torch.set_num_threads(1)


def test_train_prints_a_checkpoint_that_generate_loads(twig_data, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([*TWIG, "train", "sft", "--data", str(twig_data), "--out", str(out), "--steps", "2",
                           "--lr", "1e-3", "--limit", "4", "--no-progress", "--set", "save_every=1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = proc.stdout.strip().splitlines()[-1]
    assert final == str(out / "final")
    assert len(list((out / "checkpoints").iterdir())) == 2       # keep=2 of 2 saves
    gen = subprocess.run([*TWIG, "generate", "--model", final, "--prompts", "a red circle", "--out",
                          str(tmp_path / "gen"), "--guide-tokens", "4", "--reflect-tokens", "4"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert json.loads((tmp_path / "gen" / "00000.json").read_text())["model"] == final


@pytest.mark.parametrize("args, message", [
    (["train", "sft", "--data", "/nowhere/at/all"], "no dataset"),
    (["train", "sft", "--set", "lrr=1"], "unknown setting"),
    (["train", "sft", "--steps", "many"], "expected int"),
    (["train", "grpo", "--set", "group=1"], "group must be >= 2"),
    (["train", "sft", "--mixture", "think=1,draw=2"], "unknown task family"),
    (["eval", "--categories", "colour"], "unknown category"),
])
def test_bad_settings_exit_2_with_one_line(args, message, capsys, twig_data):
    if "--data" not in args and args[0] == "train":
        args = [*args, "--data", str(twig_data)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_eval_writes_its_table(tmp_path, monkeypatch):
    monkeypatch.setenv("TWIG_TINY_CACHE", str(tmp_path / "tiny"))
    out = tmp_path / "eval"
    code = main(["eval", "--out", str(out), "--limit", "1", "--categories", "color,spatial,non_spatial,complex",
                 "--guide-tokens", "3", "--reflect-tokens", "3", "--bands", "2"])
    assert code == 0
    table = json.loads((out / "table.json").read_text())
    assert list(table["categories"]) == ["color", "spatial", "non_spatial", "complex"]
    assert table["categories"]["complex"]["scorers"] == ["vqa", "detector", "clip"]
    assert all(0 <= v["score"] <= 1 for v in table["categories"].values())
    md = (out / "table.md").read_text()
    assert "Smoke run" in md and "| spatial | 1 |" in md
    lines = (out / "scores.jsonl").read_text().splitlines()
    assert len(lines) == 4 and "score_clip" in json.loads(lines[-1])
    # a rerun draws nothing new and scores the same
    assert main(["eval", "--out", str(out), "--limit", "1", "--categories", "color,spatial,non_spatial,complex",
                 "--guide-tokens", "3", "--reflect-tokens", "3", "--bands", "2"]) == 0
    assert json.loads((out / "table.json").read_text()) == table


def test_tokenize_fills_the_cache_that_training_reads(twig_data, tmp_path):
    cache = tmp_path / "tokens"
    assert main(["tokenize", str(twig_data), "--cache", str(cache), "--device", "cpu"]) == 0
    files = list(cache.glob("*/*.tokens.npy"))
    assert len(files) >= 20
    from trainer.config import SFTConfig
    from trainer.sft import SFTRun

    run = SFTRun(SFTConfig(data=str(twig_data), out=str(tmp_path / "o"), token_cache=str(cache), steps=1,
                           progress=False, limit=4))
    assert run.train
    assert len(list(cache.glob("*/*.tokens.npy"))) == len(files)   # nothing encoded twice
