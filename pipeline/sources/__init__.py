"""Sources list their inputs cheaply (for the plan) and load them when a unit runs."""

from __future__ import annotations

from pipeline.config import PipelineConfig
from pipeline.sources.base import Source


def make_source(config: PipelineConfig) -> Source:
    kind = config.source.kind
    if kind == "synthetic":
        from pipeline.sources.synthetic import SyntheticSource

        return SyntheticSource(config)
    if kind == "folder":
        from pipeline.sources.folder import FolderSource

        return FolderSource(config)
    if kind == "prompts":
        from pipeline.sources.prompts import PromptsSource

        return PromptsSource(config)
    from pipeline.sources.webdataset import WebDatasetSource

    return WebDatasetSource(config)


__all__ = ["Source", "make_source"]
