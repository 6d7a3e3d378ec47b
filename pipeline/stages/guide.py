"""guide: the text for each band, describing what is newly visible in it."""

from __future__ import annotations

from annotators.scene import band_guides
from pipeline.record import Reject, Sample
from pipeline.stage import Stage
from pipeline.stages.provenance import SCENE_ORACLE


class GuideStage(Stage):
    name = "guide"

    def __call__(self, sample: Sample) -> Sample:
        spec = sample.work.get("spec")
        if spec is None:
            raise Reject("no scene graph to write guides from (real images need a teacher)")
        guides = band_guides(spec, sample.work["bands"], seed=sample.key)
        for region, guide in zip(sample.regions, guides, strict=True):
            region.guide = guide
        sample.teacher.guide = SCENE_ORACLE.model_copy()
        return sample
