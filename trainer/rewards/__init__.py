"""Reward plug-ins by name, and the ensemble TwiG-GRPO optimizes.

A spec is `name` or `name=model`:

    scene                         exact, from a synthetic prompt's scene graph (no model)
    clip[=ckpt]                   CLIP-style image-text score (any CLIPModel: CLIP, PickScore, HPS)
    vqa[=ckpt]                    BLIP-VQA attribute binding (Salesforce/blip-vqa-base)
    detector[=ckpt]               GroundingDINO objects, counts, positions (IDEA-Research/grounding-dino-tiny)
    judge=model                   a teacher MLLM through the OpenAI-compatible client

A model-based reward with no checkpoint named uses a tiny random one built offline (for tests and
smoke runs; its scores mean nothing). The ensemble z-normalizes each reward within a prompt's
group of rollouts, then takes the weighted mean, so rewards on different scales count alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.rewards.base import Reward, RewardError, Sample

NAMES = ("scene", "clip", "vqa", "detector", "judge")
DEFAULT_MODELS = {"clip": "openai/clip-vit-large-patch14", "vqa": "Salesforce/blip-vqa-base",
                  "detector": "IDEA-Research/grounding-dino-tiny"}


def build(spec: str, device: str = "cpu", **options: Any) -> Reward:
    """One reward plug-in from its spec (see the module docstring)."""
    name, _, model = spec.partition("=")
    name, model = name.strip(), model.strip() or None
    if name == "scene":
        from trainer.rewards.scene import SceneReward

        if model:
            raise RewardError("the scene reward takes no model")
        return SceneReward()
    if name == "clip":
        from trainer.rewards.clip import ClipReward

        return ClipReward(model or "tiny", device=device)
    if name == "vqa":
        from trainer.rewards.vqa import VqaReward

        return VqaReward(model or "tiny", device=device)
    if name == "detector":
        from trainer.rewards.detector import DetectorReward

        return DetectorReward(model or "tiny", device=device)
    if name == "judge":
        from trainer.rewards.judge import JudgeReward

        if not model:
            raise RewardError("the judge reward needs a model: judge=<model served at the teacher "
                              "endpoint> (e.g. judge=gpt-4o-mini)")
        return JudgeReward(model, **options)
    raise RewardError(f"unknown reward {name!r}; choose from {', '.join(NAMES)}")


class Ensemble:
    """Several rewards, each normalized within its group, averaged with weights."""

    def __init__(self, rewards: list[Reward], weights: list[float] | None = None):
        if not rewards:
            raise RewardError("no reward given")
        weights = list(weights) if weights is not None else [1.0] * len(rewards)
        if len(weights) != len(rewards):
            raise RewardError(f"{len(weights)} reward weights for {len(rewards)} rewards")
        if any(w < 0 for w in weights) or not any(weights):
            raise RewardError("reward weights must be >= 0 and not all zero")
        self.rewards = rewards
        self.weights = np.asarray(weights, dtype=np.float64)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rewards]

    def raw(self, samples: list[Sample]) -> np.ndarray:
        """(N, R) raw scores, one column per reward."""
        cols = []
        for r in self.rewards:
            values = np.asarray(r.score(samples), dtype=np.float64)
            if values.shape != (len(samples),) or not np.isfinite(values).all():
                raise RewardError(f"reward {r.name} returned {values.shape} values (or non-finite ones) "
                                  f"for {len(samples)} samples")
            cols.append(values)
        return np.stack(cols, 1)

    def combine(self, raw: np.ndarray, groups: list[int]) -> np.ndarray:
        """(N,) one reward per rollout: each column z-scored within its group, then weighted mean.
        With a single reward this is its group z-score (which the advantage then leaves as is)."""
        groups_arr = np.asarray(groups)
        norm = np.zeros_like(raw)
        for g in np.unique(groups_arr):
            rows = groups_arr == g
            block = raw[rows]
            norm[rows] = (block - block.mean(0)) / (block.std(0) + 1e-4)
        return norm @ self.weights / self.weights.sum()

    def describe(self) -> list[dict[str, Any]]:
        return [r.describe() | {"weight": float(w)} for r, w in zip(self.rewards, self.weights, strict=True)]


def group_advantages(rewards: np.ndarray, groups: list[int]) -> np.ndarray:
    """GRPO's advantage: (r - mean) / (std + 1e-4) within each prompt's group."""
    groups_arr = np.asarray(groups)
    adv = np.zeros_like(rewards, dtype=np.float64)
    for g in np.unique(groups_arr):
        rows = groups_arr == g
        r = rewards[rows]
        std = r.std(ddof=1) if len(r) > 1 else 0.0   # unbiased, as the GRPO recipes compute it
        adv[rows] = (r - r.mean()) / (std + 1e-4)
    return adv


__all__ = ["Ensemble", "Reward", "RewardError", "Sample", "build", "group_advantages", "DEFAULT_MODELS"]
