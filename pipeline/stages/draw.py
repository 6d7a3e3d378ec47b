"""draw (prompt-first): an image model draws the image from the prompt and its band captions."""

from __future__ import annotations

from annotators.teacher import TeacherError, prompts
from pipeline.record import Reject, Sample
from pipeline.stages.teaching import TeacherStage, charge

_PLACES = {1: ["Across the image"], 2: ["Top half", "Bottom half"],
           3: ["Top third", "Middle third", "Bottom third"]}


def draw_prompt(prompt: str, guides: list[str]) -> str:
    places = _PLACES.get(len(guides)) or [f"Band {i + 1} of {len(guides)}" for i in range(len(guides))]
    bands = " ".join(f"{p}: {g.rstrip('.')}." for p, g in zip(places, guides, strict=True))
    return prompts.render(prompts.DRAW, prompt=prompt.rstrip("."), bands=bands).user


class DrawStage(TeacherStage):
    name, role = "draw", "image"

    async def acall(self, sample: Sample) -> Sample:
        text = draw_prompt(sample.prompt or "", [r.guide for r in sample.regions])
        model = self.teacher.config.image.model
        try:
            raw, spend = await self.teacher.draw(text)
        except TeacherError as e:
            charge(sample, "image", model, prompts.DRAW, e.spend)
            raise Reject(f"teacher image: {e.reason}") from None
        charge(sample, "image", model, prompts.DRAW, spend)
        sample.raw, sample.image = raw, None
        return sample
