"""Existing WebDataset tar shards (local paths or fsspec URLs) as input.

Members are grouped into samples by the WebDataset convention (key = path up to the first dot of the
file name). Only regular files are read, and only those a unit needs; links, devices, unsafe names,
empty keys and members over `image.max_file_bytes` become rejects, and nothing is ever extracted to
disk. Odd characters in keys (spaces, `%`, newlines, any Unicode) are fine: a record's key is a
hash of its tar and member key.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator

import fsspec
from braceexpand import braceexpand

from pipeline.config import ConfigError
from pipeline.record import Reject, Sample, WorkItem
from pipeline.sources.base import Source, stable_key
from pipeline.sources.sidecar import parse_sidecar
from schemas import Source as SourceInfo
from sharding.reader import split_member_name

# as the folder source: an animated GIF/PNG/WebP gives its first frame, an SVG is a reject
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "avif", "svg")
TEXT_EXTS = ("json", "txt")


def _unsafe(name: str) -> str | None:
    if name.startswith("/") or name.startswith("\\") or re.match(r"[A-Za-z]:[\\/]", name):
        return "absolute member path"
    if any(part == ".." for part in name.replace("\\", "/").split("/")):
        return "member path escapes the archive ('..')"
    return None


class WebDatasetSource(Source):
    kind = "webdataset"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.urls = [u for pattern in config.source.urls for u in braceexpand(pattern)]
        if not self.urls:
            raise ConfigError("source.urls expands to no tar files")

    def _members(self, url: str, wanted: set[str] | None = None
                 ) -> Iterator[tuple[tarfile.TarInfo, bytes | None, str | None]]:
        """(member, its bytes or None, why it is skipped or None), streaming the tar once; only
        the members named in `wanted` are read (the rest are skipped over, not loaded)."""
        limit = self.config.image.max_file_bytes
        try:
            with fsspec.open(url, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
                for info in tar:
                    if info.isdir():  # ordinary in tars; nothing is extracted, so harmless
                        continue
                    why = _unsafe(info.name)
                    if why is None and not info.isreg():
                        why = f"not a regular file ({'link' if info.issym() or info.islnk() else 'special'})"
                    if why is None and not split_member_name(info.name)[0].rpartition("/")[2]:
                        why = "empty sample key (the file name starts with a dot)"
                    if why is None and info.size > limit:
                        why = f"file too large ({info.size} bytes > {limit})"
                    read = why is None and wanted is not None and info.name in wanted
                    yield info, tar.extractfile(info).read() if read else None, why
        except (OSError, tarfile.TarError, EOFError) as e:
            raise ConfigError(f"cannot read tar {url}: {e}") from None

    def items(self) -> list[WorkItem]:
        out: list[WorkItem] = []
        for url in self.urls:
            groups: dict[str, dict] = {}
            for info, _data, why in self._members(url):
                key, ext = split_member_name(info.name)
                g = groups.setdefault(key, {"image": None, "text": [], "problems": [], "exts": []})
                if why:
                    g["problems"].append(f"{info.name}: {why}")
                    continue
                if ext in g["exts"]:
                    g["problems"].append(f"duplicate member {info.name}")
                g["exts"].append(ext)
                if ext in IMAGE_EXTS and g["image"] is None:
                    g["image"] = info.name
                elif ext in TEXT_EXTS:
                    g["text"].append(info.name)
            for key, g in groups.items():
                ident = f"{url}#{key}"
                out.append(self.item(stable_key("wds", ident), f"{url}#{key}",
                                     (url, g["image"], tuple(sorted(g["text"])), tuple(g["problems"]))))
        return out

    def load_all(self, items: tuple[WorkItem, ...]) -> Iterator[tuple[WorkItem, Sample | Reject]]:
        wanted: dict[str, set[str]] = {}
        for it in items:
            url, image, texts, _ = it.ref
            wanted.setdefault(url, set()).update([n for n in (image, *texts) if n])
        blobs: dict[tuple[str, str], bytes] = {}
        for url, names in wanted.items():
            for info, data, _why in self._members(url, names):
                if data is not None and (url, info.name) not in blobs:
                    blobs[(url, info.name)] = data
        for it in items:
            url, image, texts, problems = it.ref
            if problems:
                yield it, Reject("unsafe or malformed tar members: " + "; ".join(problems))
                continue
            if image is None:
                yield it, Reject(f"sample has no image member ({'/'.join('.' + e for e in IMAGE_EXTS)})")
                continue
            try:
                meta: dict = {}
                for name in texts:
                    meta = {**parse_sidecar(name, blobs[(url, name)]), **meta}
            except Reject as r:
                yield it, r
                continue
            yield it, Sample(key=it.key, split=it.split, raw=blobs[(url, image)],
                             prompt=meta.get("prompt"), category=meta.get("category"),
                             source=SourceInfo(kind="webdataset", uri=it.uri,
                                               license=meta.get("license") or self.config.source.license))
