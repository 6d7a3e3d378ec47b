"""What every reward plug-in sees and returns.

A reward scores finished images against what was asked: one float in [0, 1] per sample, higher is
better. Plug-ins are built by name from a spec string (`trainer.rewards.build`), so the trainer, the
evaluator and the command line share one registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from schemas.twig_v1 import Scene


class RewardError(ValueError):
    """A reward cannot be built or cannot score what it was given; the message says why."""


@dataclass
class Sample:
    """One image to score: the prompt it was drawn for, and the exact scene when it is synthetic."""

    prompt: str
    image: Image.Image
    category: str | None = None      # T2I-CompBench category (color, spatial, ...) when known
    scene: Scene | None = None       # the scene graph of a synthetic prompt (exact reward)
    canvas: tuple[int, int] | None = None   # (width, height) the scene's boxes are given in


class Reward(Protocol):
    """A reward plug-in. `score` returns one value in [0, 1] per sample, in order."""

    name: str

    def score(self, samples: list[Sample]) -> list[float]: ...

    def describe(self) -> dict[str, Any]: ...
