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


class RayCluster:
    """A real two-node Ray cluster on this machine: `ray start --head`, then `ray start --address`,
    each node one CPU and its own custom resource (node_a, node_b), token authentication on."""

    def __init__(self, address: str, temp_dir: Path) -> None:
        self.address, self.temp_dir = address, temp_dir


@pytest.fixture(scope="session")
def ray_cluster():
    """One Ray cluster per test session (starting one costs ~10 s). Its nodes are started without
    any teacher API key in their environment, as a remote cluster's would be."""
    import secrets
    import shutil
    import socket
    import subprocess
    import tempfile

    ray_bin = str(Path(sys.executable).parent / "ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RAY_"))}
    env.update(token)
    common = ["--num-cpus=1", "--object-store-memory=150000000", "--disable-usage-stats",
              "--node-ip-address=127.0.0.1"]
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false",
                        f"--temp-dir={temp_dir}", '--resources={"node_a": 1}', *common],
                       env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([ray_bin, "start", f"--address={address}", '--resources={"node_b": 1}',
                        *common], env=env, check=True, capture_output=True, timeout=120)
        saved = {k: os.environ.get(k) for k in token}
        os.environ.update(token)  # this test process connects as a driver
        yield RayCluster(address, temp_dir)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
        for k, v in locals().get("saved", {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(temp_dir, ignore_errors=True)
