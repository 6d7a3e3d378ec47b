"""guide: the text for each band, describing what is newly visible in it.

From the scene graph (synthetic), or from a teacher: image-first, band by band on the partial
image (bands below masked, as TwiG sees it); prompt-first, all K band captions from the prompt
before the image exists (how TwiG-50K was made)."""

from __future__ import annotations

from annotators.scene import band_guides
from annotators.teacher import prompts
from annotators.teacher.outputs import GuideOut, bands_model
from pipeline.imaging import masked_below
from pipeline.record import Reject, Sample
from pipeline.stage import Stage
from pipeline.stages.provenance import SCENE_ORACLE
from pipeline.stages.teaching import TeacherStage, guides_so_far


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


def _clean(text: str) -> str:
    return " ".join(text.split())


class TeacherGuideStage(TeacherStage):
    """Image-first: guide k from the image with bands below k masked, given guides 1..k-1."""

    name = role = "guide"

    async def acall(self, sample: Sample) -> Sample:
        k, height = len(sample.regions), sample.image.height
        done: list[str] = []
        for region in sample.regions:
            x0, y0, x1, y1 = region.box
            prompt = prompts.render(prompts.GUIDE, k=k, prompt=sample.prompt, previous=guides_so_far(done),
                                    band=region.index + 1, y0=y0, y1=y1, height=height)
            data = await self.ask(sample, prompt, GuideOut, [masked_below(sample.image, y1)])
            region.guide = _clean(data["guide"])
            done.append(region.guide)
        return sample


class TeacherBandsStage(TeacherStage):
    """Prompt-first: the teacher plans the image and writes K band captions from the prompt."""

    name, role = "guide", "guide"

    async def acall(self, sample: Sample) -> Sample:
        k = len(sample.regions)
        data = await self.ask(sample, prompts.render(prompts.BANDS, k=k, prompt=sample.prompt),
                              bands_model(k))
        for region, caption in zip(sample.regions, data["captions"], strict=True):
            region.guide = _clean(caption)
        return sample
