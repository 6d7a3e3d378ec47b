"""The record in flight between stages: a `twig/v1` record being built, plus its working data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from schemas import FilterValues, Region, Scene, Source, TeacherRoles


@dataclass
class WorkItem:
    """One input as the plan sees it: cheap to list, enough to load it later."""

    key: str
    split: str
    uri: str
    ref: Any  # source-specific: an index, a path, (tar url, member names)


@dataclass
class Sample:
    key: str
    split: str
    source: Source
    raw: bytes | None = None  # undecoded input bytes
    image: Image.Image | None = None  # decoded, oriented RGB
    jpeg: bytes | None = None  # the encoded training image
    sha256: str | None = None
    phash: int | None = None
    prompt: str | None = None
    category: str | None = None
    regions: list[Region] = field(default_factory=list)
    teacher: TeacherRoles = field(default_factory=TeacherRoles)
    filters: FilterValues = field(default_factory=FilterValues)
    scene: Scene | None = None
    work: dict[str, Any] = field(default_factory=dict)  # stage-private data (e.g. the scene spec)


class Reject(Exception):
    """Raised by a source or stage: this input is dropped, with a reason the user can read."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
