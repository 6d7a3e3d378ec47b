"""reflect: per band, a 0-100 score on five criteria, a critique and a revised guide."""

from __future__ import annotations

from annotators.scene import band_reflections
from pipeline.record import Reject, Sample
from pipeline.stage import Stage
from pipeline.stages.provenance import SCENE_ORACLE
from schemas import Reflection


class ReflectStage(Stage):
    name = "reflect"

    def __init__(self, theta: int) -> None:
        self.theta = theta

    def __call__(self, sample: Sample) -> Sample:
        spec = sample.work.get("spec")
        if spec is None:
            raise Reject("no scene graph to reflect from (real images need a teacher)")
        guides = [r.guide for r in sample.regions]
        reflections = band_reflections(spec, sample.work["bands"], guides, seed=sample.key,
                                       theta=self.theta)
        for region, refl in zip(sample.regions, reflections, strict=True):
            region.reflection = Reflection.model_validate(refl)
        sample.teacher.reflect = SCENE_ORACLE.model_copy()
        return sample
