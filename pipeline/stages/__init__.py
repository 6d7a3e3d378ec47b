"""The concrete stages, and the list a config asks for (in its recipe's order, up to `until`)."""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.stage import Stage


def make_teacher(config: PipelineConfig, share: float | None = None):
    """The run's teacher (one per worker process), with this worker's share of the limits."""
    from annotators.teacher import Teacher

    cache = config.run.cache or str(Path(config.run.out) / "cache" / "teacher")
    return Teacher(config.teacher, config.endpoints, cache,
                   share if share is not None else 1.0 / config.workers())


def build_stages(config: PipelineConfig, teacher=None) -> list[Stage]:
    from pipeline.stages.caption import CaptionStage, TeacherCaptionStage
    from pipeline.stages.draw import DrawStage
    from pipeline.stages.filter import FilterStage
    from pipeline.stages.guide import GuideStage, TeacherBandsStage, TeacherGuideStage
    from pipeline.stages.judge import JudgeStage
    from pipeline.stages.prepare import PrepareStage
    from pipeline.stages.reflect import ReflectStage, TeacherReflectStage
    from pipeline.stages.segment import SegmentStage

    modes = config.annotate_modes()
    if config.teacher_roles() and teacher is None:
        teacher = make_teacher(config)
    theta = config.annotate.theta

    def guide() -> Stage:
        if modes["caption"] == "prompt":
            return TeacherBandsStage(teacher)
        return TeacherGuideStage(teacher) if modes["guide"] == "teacher" else GuideStage()

    makers = {
        "prepare": lambda: PrepareStage(config.image),
        "caption": lambda: TeacherCaptionStage(teacher) if modes["caption"] == "teacher"
        else CaptionStage(modes["caption"]),
        "segment": lambda: SegmentStage(config.segment, config.image),
        "guide": guide,
        "draw": lambda: DrawStage(teacher),
        "reflect": lambda: TeacherReflectStage(teacher, theta) if modes["reflect"] == "teacher"
        else ReflectStage(theta),
        "judge": lambda: JudgeStage(teacher),
        "filter": lambda: FilterStage(config.filter),
    }
    return [makers[name]() for name in config.stages()]


def window(config: PipelineConfig) -> int:
    """How many records a worker keeps in flight: its share of the teacher's concurrency, or 1."""
    roles = config.teacher_roles()
    if not roles:
        return 1
    names = {config.teacher.endpoint_of(r) for r in roles}
    return max(1, math.ceil(max(config.endpoints[n].concurrency for n in names) / config.workers()))
