"""The stage interface: a named step over `Sample`s that declares its resources.

A stage is a plain function `Sample -> Sample` (wrapped by `FunctionStage`) or a small class with
`setup()` for one-time work (load a model, open a client) and `__call__` for per-record work; a
stage that waits on the network sets `is_async` and implements `acall`, so that many records are
in flight at once.
It raises `Reject` to drop a record. Engines schedule stages; they never hold stage logic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.record import Reject, Sample

__all__ = ["FunctionStage", "Reject", "Resources", "Stage", "unit_resources"]


@dataclass(frozen=True)
class Resources:
    """What one instance of a stage needs from the engine that schedules it."""

    cpus: float = 1.0
    gpus: float = 0.0
    concurrency: int | None = None  # at most this many instances at once (e.g. an API budget)


class Stage:
    name: str = "stage"
    resources: Resources = Resources()
    is_async: bool = False  # True: the runner awaits `acall` and overlaps many records

    def setup(self) -> None:
        """One-time work before the first record (per worker)."""

    def __call__(self, sample: Sample) -> Sample:  # pragma: no cover - interface
        raise NotImplementedError

    async def acall(self, sample: Sample) -> Sample:
        """The async form, for stages that wait on the network (teacher requests)."""
        return self(sample)


class FunctionStage(Stage):
    """A plain function used as a stage."""

    def __init__(self, name: str, fn: Callable[[Sample], Sample],
                 resources: Resources = Resources()) -> None:
        self.name, self.fn, self.resources = name, fn, resources

    def __call__(self, sample: Sample) -> Sample:
        return self.fn(sample)


def unit_resources(stages: list[Stage]) -> Resources:
    """What one work unit (every stage over its records, in one worker) asks of a cluster: the
    GPUs of its hungriest stage, the tightest concurrency cap, and the CPUs of the stage it spends
    its time in: a teacher-bound unit mostly waits on the network (its async stages' CPUs), any
    other the most any stage needs."""
    waiting = [s.resources.cpus for s in stages if s.is_async]
    cpus = min(waiting) if waiting else max((s.resources.cpus for s in stages), default=1.0)
    caps = [s.resources.concurrency for s in stages if s.resources.concurrency]
    return Resources(cpus=cpus, gpus=max((s.resources.gpus for s in stages), default=0.0),
                     concurrency=min(caps) if caps else None)
