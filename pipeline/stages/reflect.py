"""reflect: per band, a 0-100 score on five criteria, a critique and a revised guide.

From the scene graph (synthetic: computed from the drawn defect), or from a teacher that sees the
image drawn so far (bands below masked) and judges the band just drawn. The K band requests of a
record go out together."""

from __future__ import annotations

import asyncio

from annotators.scene import band_reflections
from annotators.teacher import prompts
from annotators.teacher.outputs import ReflectOut
from pipeline.imaging import masked_below
from pipeline.record import Reject, Sample
from pipeline.stage import Stage
from pipeline.stages.provenance import SCENE_ORACLE
from pipeline.stages.teaching import TeacherStage, guides_so_far
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


class TeacherReflectStage(TeacherStage):
    name = role = "reflect"

    def __init__(self, teacher, theta: int) -> None:
        super().__init__(teacher)
        self.theta = theta

    async def _band(self, sample: Sample, i: int) -> Reflection:
        regions, height = sample.regions, sample.image.height
        region = regions[i]
        x0, y0, x1, y1 = region.box
        prompt = prompts.render(
            prompts.REFLECT, k=len(regions), prompt=sample.prompt,
            previous=guides_so_far([r.guide for r in regions[:i]]), band=i + 1, y0=y0, y1=y1,
            height=height, guide=region.guide, theta=self.theta)
        data = await self.ask(sample, prompt, ReflectOut, [masked_below(sample.image, y1)])
        accepted = data["score"] > self.theta
        revised = " ".join(data["revised_guide"].split())
        return Reflection(score=data["score"], criteria=data["criteria"],
                          critique=" ".join(data["critique"].split()),
                          revised_guide=region.guide if accepted else revised, accepted=accepted)

    async def acall(self, sample: Sample) -> Sample:
        results = await asyncio.gather(*(self._band(sample, i) for i in range(len(sample.regions))),
                                       return_exceptions=True)
        for r in results:  # the first failure (in band order) is the reason; all spend is charged
            if isinstance(r, BaseException):
                raise r
        for region, refl in zip(sample.regions, results, strict=True):
            region.reflection = refl
        return sample
