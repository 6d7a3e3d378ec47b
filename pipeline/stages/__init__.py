"""The concrete stages, and the list a config asks for (in pipeline order, up to `until`)."""

from __future__ import annotations

from pipeline.config import STAGES, PipelineConfig
from pipeline.stage import Stage


def build_stages(config: PipelineConfig) -> list[Stage]:
    from pipeline.stages.caption import CaptionStage
    from pipeline.stages.filter import FilterStage
    from pipeline.stages.guide import GuideStage
    from pipeline.stages.prepare import PrepareStage
    from pipeline.stages.reflect import ReflectStage
    from pipeline.stages.segment import SegmentStage

    makers = {
        "prepare": lambda: PrepareStage(config.image),
        "caption": lambda: CaptionStage(config.annotate.caption),
        "segment": lambda: SegmentStage(config.segment, config.image),
        "guide": lambda: GuideStage(),
        "reflect": lambda: ReflectStage(config.annotate.theta),
        "filter": lambda: FilterStage(config.filter),
    }
    last = STAGES.index(config.until)
    return [makers[name]() for name in STAGES[: last + 1]]
