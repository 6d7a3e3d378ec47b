"""Engines schedule work units on workers; they hold no stage logic.

`local` (a process pool on this machine), `ray` (tasks on a local instance or a cluster) and
`beam` (a Beam pipeline on its FnApiRunner here, or any Beam runner) all run `UnitRunner` over the
same deterministic plan, so they write the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pipeline.plan import Unit
from pipeline.runner import UnitRunner

EngineFn = Callable[[UnitRunner, list[Unit], int, bool], list[dict]]
ENGINES = ("local", "beam", "ray")


class EngineError(RuntimeError):
    """An engine could not finish (a unit failed past its retries, a cluster too small); finished
    units are kept and a rerun resumes."""

    fatal = True


def grace_s(limit: float) -> float:
    """How long past `run.unit_timeout_s` an engine's watchdog waits for a unit to stop by itself
    (`UnitRunner.compute` gives up at the limit) before it stops the unit's worker."""
    return min(60.0, max(2.0, 0.05 * limit))


def get_engine(name: str) -> EngineFn:
    if name == "local":
        from pipeline.engines.local import run_local

        return run_local
    if name == "ray":
        from pipeline.engines.ray import run_ray

        return run_ray
    if name == "beam":
        logging.disable(logging.WARNING)  # apache_beam's import warns about optional GCP libraries
        try:
            from pipeline.engines.beam import run_beam
        finally:
            logging.disable(logging.NOTSET)
        return run_beam
    raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
