"""A small synthetic TwiG dataset (built by the real pipeline) and tiny checkpoints for trainer tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def twig_data(tmp_path_factory):
    """20 synthetic scenes through `make dataset`'s own pipeline: train and val shards, a card."""
    from pipeline.config import load_config
    from pipeline.driver import build

    out = tmp_path_factory.mktemp("twig-data")
    build(load_config(None, ["source.count=24", "shard.max_records=8", "run.progress=false",
                             "val_fraction=0.2", f"run.out={out}", "run.workers=1"]))
    return out


@pytest.fixture(scope="session")
def tiny2(tmp_path_factory):
    """A tiny random Janus with a 2x2 token grid and 8 codes, saved as a checkpoint folder."""
    from generator.model import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny2") / "ckpt", seed=0, grid=2, codebook=8)
