"""Resumable training checkpoints: `<out>/checkpoints/step-NNNNNNN/`, written whole or not at all.

Each holds accelerate's full state (model, optimizer, scheduler, every process's RNG) and
`trainer_state.json` (step, settings digest, what the data order depends on). It is written to a
hidden temporary folder and renamed into place, so a run killed while saving leaves the previous
checkpoint as the latest one; `keep` bounds how many stay on disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

STATE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d{7})$")


def checkpoint_dir(out: Path) -> Path:
    return Path(out) / "checkpoints"


def latest(out: Path) -> Path | None:
    """The newest complete checkpoint under `out`, or None."""
    root = checkpoint_dir(out)
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if _NAME.match(p.name) and (p / STATE).is_file()]
    return max(done, key=lambda p: p.name) if done else None


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / STATE).read_text(encoding="utf-8"))


def save(accelerator, out: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Every process calls this (accelerate gathers sharded state); the main one renames."""
    root = checkpoint_dir(out)
    final = root / f"step-{step:07d}"
    tmp = root / f".step-{step:07d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE).write_text(json.dumps({**state, "step": step}, indent=2, sort_keys=True) + "\n",
                                 encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _prune(root, keep)
    accelerator.wait_for_everyone()
    return final


def load(accelerator, path: Path) -> dict[str, Any]:
    state = read_state(path)
    accelerator.load_state(str(path))
    return state


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.iterdir() if _NAME.match(p.name))
    for old in done[: max(0, len(done) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
