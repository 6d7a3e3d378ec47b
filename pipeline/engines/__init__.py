"""Engines schedule work units on workers; they hold no stage logic."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.plan import Unit
from pipeline.runner import UnitRunner

EngineFn = Callable[[UnitRunner, list[Unit], int, bool], list[dict]]


def get_engine(name: str) -> EngineFn:
    if name == "local":
        from pipeline.engines.local import run_local

        return run_local
    raise ValueError(f"unknown engine {name!r}")
