"""The source interface."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from pipeline.config import PipelineConfig
from pipeline.plan import split_of
from pipeline.record import Reject, Sample, WorkItem


def stable_key(prefix: str, identity: str) -> str:
    """A record key from the source identity: same input, same key, on every machine."""
    return f"{prefix}-{hashlib.sha256(identity.encode()).hexdigest()[:20]}"


class Source:
    kind = "source"

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config

    def item(self, key: str, uri: str, ref: object) -> WorkItem:
        return WorkItem(key, split_of(key, self.config.val_fraction), uri, ref)

    def items(self) -> list[WorkItem]:
        """Every input, in a deterministic order."""
        raise NotImplementedError

    def load(self, item: WorkItem) -> Sample:
        """The sample for one input, or raise Reject."""
        raise NotImplementedError

    def load_all(self, items: tuple[WorkItem, ...]) -> Iterator[tuple[WorkItem, Sample | Reject]]:
        """Samples for a unit's inputs, in order (sources override this to batch their reads)."""
        for item in items:
            try:
                yield item, self.load(item)
            except Reject as r:
                yield item, r
