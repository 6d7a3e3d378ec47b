"""The exact reward for synthetic prompts: how well the image draws its scene specification.

A synthetic record carries the scene graph it was rendered from (`record.scene`): every object's
shape, color and box. For each object, the shape's own mask (the renderer's geometry) is laid
over the image at the object's box, scaled to the image's size, and every pixel under it scores
`max(0, 1 - d / 200)` for its RGB distance d to the object's color. The reward is the mean over
objects of the mean over their pixels: 1 for an image that paints every object in its color at its
place, near 0 for one that does not. Nothing is learned or guessed, so it is the reward of choice
for checking that TwiG-GRPO optimizes what it is given.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from annotators.scene.render import shape_mask
from annotators.scene.vocab import COLORS
from trainer.rewards.base import RewardError, Sample

SCALE = 200.0


class SceneReward:
    name = "scene"

    def score(self, samples: list[Sample]) -> list[float]:
        return [self.score_one(s) for s in samples]

    def score_one(self, sample: Sample) -> float:
        if sample.scene is None or not sample.scene.objects:
            raise RewardError(f"the scene reward needs a synthetic prompt's scene graph; "
                              f"{sample.prompt[:60]!r} has none (use a synthetic dataset, or other rewards)")
        image = np.asarray(sample.image.convert("RGB"), dtype=np.float32)
        height, width = image.shape[:2]
        cw, ch = sample.canvas or (width, height)
        sx, sy = width / cw, height / ch
        scores = []
        for obj in sample.scene.objects:
            if obj.color not in COLORS:
                raise RewardError(f"scene object {obj.id} has color {obj.color!r}, not in the palette")
            x0, y0 = int(round(obj.box[0] * sx)), int(round(obj.box[1] * sy))
            x1, y1 = max(x0 + 1, int(round(obj.box[2] * sx))), max(y0 + 1, int(round(obj.box[3] * sy)))
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
            if x1 <= x0 or y1 <= y0:
                scores.append(0.0)
                continue
            if min(x1 - x0, y1 - y0) < 4:      # a few pixels: the box is the shape
                mask = np.ones((y1 - y0, x1 - x0), dtype=bool)
            else:
                mask = np.asarray(shape_mask(obj.shape, x1 - x0, y1 - y0), dtype=bool)
            if not mask.any():
                mask[:] = True
            pixels = image[y0:y1, x0:x1][mask]
            dist = np.linalg.norm(pixels - np.asarray(COLORS[obj.color], dtype=np.float32), axis=-1)
            scores.append(float(np.clip(1.0 - dist / SCALE, 0.0, 1.0).mean()))
        return float(np.mean(scores))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "exact", "scale": SCALE}

