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


class LocalOpenAI:
    """Handle on a running `annotators.teacher.localserver` (a real HTTP server on 127.0.0.1 that
    speaks the OpenAI chat-completions and images protocols; the stand-in for a remote API)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def stats(self) -> dict:
        import json
        import urllib.request

        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/_stats", timeout=10) as r:
            return json.loads(r.read())

    def requests(self) -> int:
        return self.stats().get("requests", 0)


@pytest.fixture(scope="module")
def local_openai():
    """One server per test module, requiring the key `sk-test-...` (see TEST_KEY)."""
    from annotators.teacher.localserver import running

    with running("--api-key", TEST_KEY, "--hang-s", "30", "--max-image-side", "768") as url:
        yield LocalOpenAI(url)


TEST_KEY = "sk-test-4f9c2e7a1b8d3f6e5c0a9b7d"
