"""caption: the prompt for the image (from the scene graph, a sidecar file, or a teacher)."""

from __future__ import annotations

from annotators.scene import describe_prompt, scene_graph
from annotators.teacher import prompts
from annotators.teacher.outputs import CaptionOut
from pipeline.record import Reject, Sample
from pipeline.stage import Stage
from pipeline.stages.provenance import SCENE_ORACLE
from pipeline.stages.teaching import TeacherStage
from schemas import TeacherRole


class CaptionStage(Stage):
    name = "caption"

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, sample: Sample) -> Sample:
        if self.mode == "scene":
            spec = sample.work.get("spec")
            if spec is None:
                raise Reject("no scene graph to caption from (scene captions need the synthetic source)")
            sample.prompt = describe_prompt(spec)
            sample.scene = scene_graph(spec)
            sample.teacher.caption = SCENE_ORACLE.model_copy()
        else:
            if not sample.prompt:
                raise Reject("no prompt: add a .txt or .json sidecar next to the image")
            sample.teacher.caption = TeacherRole(backend="sidecar", model="none", prompt_version="none")
        return sample


class TeacherCaptionStage(TeacherStage):
    """Image-first: the teacher looks at the image and writes the prompt it could be drawn from."""

    name = role = "caption"

    async def acall(self, sample: Sample) -> Sample:
        data = await self.ask(sample, prompts.render(prompts.CAPTION), CaptionOut, [sample.image])
        sample.prompt = " ".join(data["prompt"].split())
        return sample
