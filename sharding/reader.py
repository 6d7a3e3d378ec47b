"""Read WebDataset shards back: member names split into (key, ext), samples in member order."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset convention: 'a/b/k.seg.jpg' -> ('a/b/k', 'seg.jpg')."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), (ext.lower() if dot else "")


def iter_samples(path: Path, exts: tuple[str, ...] | None = None) -> Iterator[dict[str, bytes | str]]:
    """Samples ({'__key__': key, ext: bytes}) of a tar in member order; only `exts` are read."""
    current: dict | None = None
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if not info.isreg():
                continue
            key, ext = split_member_name(info.name)
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key}
            if exts is None or ext in exts:
                current[ext] = tar.extractfile(info).read()
        if current is not None:
            yield current
