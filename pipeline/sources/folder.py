"""Images in a folder (recursive), with optional sidecar `.txt`/`.json` prompts beside them."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import ConfigError
from pipeline.record import Reject, Sample, WorkItem
from pipeline.sources.base import Source, stable_key
from pipeline.sources.sidecar import parse_sidecar
from schemas import Source as SourceInfo

# .svg is listed so that a vector file becomes a reject that says so, not a silent skip; an
# animated GIF, PNG or WebP gives its first frame.
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif", ".svg"}


class FolderSource(Source):
    kind = "folder"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.root = Path(config.source.path or ".")
        if not self.root.is_dir():
            raise ConfigError(f"source.path {str(self.root)!r} is not a folder")

    def items(self) -> list[WorkItem]:
        files = sorted(p for p in self.root.rglob("*")
                       if p.suffix.lower() in IMAGE_EXTS and not p.is_symlink() and p.is_file())
        out = []
        for p in files:
            rel = p.relative_to(self.root).as_posix()
            out.append(self.item(stable_key("img", rel), f"folder://{rel}", rel))
        return out

    def load(self, item: WorkItem) -> Sample:
        path = self.root / item.ref
        try:  # the file may have gone, or become unreadable, since the plan listed it
            size = path.stat().st_size
            if size > self.config.image.max_file_bytes:
                raise Reject(f"file too large ({size} bytes > {self.config.image.max_file_bytes})")
            meta: dict = {}
            for ext in (".json", ".txt"):
                side = path.with_suffix(ext)
                if side.is_file():
                    meta = {**parse_sidecar(side.name, side.read_bytes()), **meta}
            raw = path.read_bytes()
        except OSError as e:
            raise Reject(f"cannot read file: {e.strerror or e}") from None
        return Sample(key=item.key, split=item.split, raw=raw,
                      prompt=meta.get("prompt"), category=meta.get("category"),
                      source=SourceInfo(kind="folder", uri=item.uri,
                                        license=meta.get("license") or self.config.source.license))
