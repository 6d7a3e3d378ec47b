"""segment: K bands of whole token rows; uniform, or adaptive (boundaries moved off objects)."""

from __future__ import annotations

import numpy as np

from annotators.scene.oracle import defect_bands
from pipeline.config import ImageConfig, SegmentConfig
from pipeline.record import Sample
from pipeline.stage import Stage
from schemas import Region


def uniform_rows(grid: int, k: int) -> list[int]:
    """Boundaries 0 = b0 < b1 < ... < bk = grid of k near-equal bands."""
    return [round(i * grid / k) for i in range(k + 1)]


def adaptive_rows(grid: int, k: int, cost, max_shift: int, min_rows: int) -> list[int]:
    """Move each inner boundary within +-max_shift rows to the row of least `cost(row)`."""
    bounds = uniform_rows(grid, k)
    for i in range(1, k):
        lo = max(bounds[i - 1] + min_rows, bounds[i] - max_shift)
        hi = min(bounds[i + 1] - min_rows if i + 1 < k else grid - min_rows, bounds[i] + max_shift)
        if lo > hi:
            continue
        nominal = bounds[i]
        bounds[i] = min(range(lo, hi + 1), key=lambda r: (cost(r), abs(r - nominal), r))
    return bounds


class SegmentStage(Stage):
    name = "segment"

    def __init__(self, cfg: SegmentConfig, image: ImageConfig) -> None:
        self.cfg, self.image = cfg, image

    def _cost(self, sample: Sample):
        row_h = self.image.size / self.image.grid
        spec = sample.work.get("spec")
        if spec is not None:  # how much object width a cut at this row slices through
            boxes = [o.box for o in spec.drawn]
            return lambda r: sum(b[2] - b[0] for b in boxes if b[1] < r * row_h < b[3])
        gray = np.asarray(sample.image.convert("L"), dtype=np.float32)
        edge = np.abs(np.diff(gray, axis=0)).sum(axis=1)  # edge energy between pixel rows
        return lambda r: float(edge[int(r * row_h) - 1]) if 0 < r * row_h <= len(edge) else 0.0

    def __call__(self, sample: Sample) -> Sample:
        g, k = self.image.grid, self.cfg.bands
        if self.cfg.mode == "adaptive":
            bounds = adaptive_rows(g, k, self._cost(sample), self.cfg.max_shift_rows, self.cfg.min_rows)
        else:
            bounds = uniform_rows(g, k)
        size, row_h = self.image.size, self.image.size / g
        sample.regions = [
            Region(index=i, rows=[bounds[i], bounds[i + 1]],
                   box=[0, round(bounds[i] * row_h), size, round(bounds[i + 1] * row_h)], guide="")
            for i in range(k)
        ]
        sample.work["bands"] = [(r.box[1], r.box[3]) for r in sample.regions]
        spec = sample.work.get("spec")
        if sample.scene is not None and sample.scene.defect is not None and spec is not None:
            sample.scene.defect.band = defect_bands(spec, sample.work["bands"])[0]
        return sample
