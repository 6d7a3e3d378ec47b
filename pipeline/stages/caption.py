"""caption: the prompt for the image (from the scene graph, or from a sidecar file)."""

from __future__ import annotations

from annotators.scene import describe_prompt, scene_graph
from pipeline.record import Reject, Sample
from pipeline.stage import Stage
from pipeline.stages.provenance import SCENE_ORACLE
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
