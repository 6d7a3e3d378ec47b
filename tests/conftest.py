"""Shared test set-up: quiet single-threaded numerics (CI has 2 noisy cores), offline hubs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
TWIG = [sys.executable, "-m", "pipeline"]


def pytest_configure(config):
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


@pytest.fixture
def small_config():
    """A fast synthetic config: 60 scenes in units of 16, 2 workers."""
    from pipeline.config import load_config

    def make(out: Path, **overrides):
        sets = [f"{k}={v}" for k, v in overrides.items()]
        return load_config(None, ["source.count=60", "shard.max_records=16", "run.progress=false",
                                  f"run.out={out}", *sets])

    return make
