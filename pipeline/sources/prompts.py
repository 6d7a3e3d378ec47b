"""Prompt lists (prompt-first recipe): text files with one prompt per line, e.g. T2I-CompBench's
`color_train.txt`. The category is the file name without its `_train`/`_val` suffix.

Files are UTF-8 (a byte-order mark is dropped); a file that is not is a config error naming the
byte. Lines end at `\n`, `\r\n` or `\r` only (so `file:N` in a record's uri is the line an editor
shows), blank lines are skipped, whitespace runs become one space, and a prompt that is too long
or holds control characters (NUL and the like) is a reject with its reason."""

from __future__ import annotations

import glob
import re
from collections import Counter
from pathlib import Path

from pipeline.config import ConfigError
from pipeline.record import Reject, Sample, WorkItem
from pipeline.sources.base import Source, stable_key
from schemas import Source as SourceInfo

_LINES = re.compile(r"\r\n|\r|\n")  # not str.splitlines(): it also splits at \f, \x1c, U+2028...
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")


def category_of(path: Path) -> str:
    stem = path.stem
    for suffix in ("_train", "_val", "_test"):
        stem = stem.removesuffix(suffix)
    return stem


class PromptsSource(Source):
    kind = "prompts"

    def files(self) -> list[Path]:
        out: list[Path] = []
        for pattern in self.config.source.prompts:
            hits = sorted(Path(p) for p in glob.glob(pattern)) if glob.has_magic(pattern) else [Path(pattern)]
            hits = [p for p in hits if p.is_file()]
            if not hits:
                raise ConfigError(f"source.prompts: no file matches {pattern!r}")
            out += [p for p in hits if p not in out]
        return out

    def items(self) -> list[WorkItem]:
        items = []
        for path in self.files():
            category = category_of(path)
            try:
                lines = _LINES.split(path.read_bytes().decode("utf-8-sig"))
            except UnicodeDecodeError as e:
                raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            seen: Counter[str] = Counter()
            for n, line in enumerate(lines, 1):
                prompt = " ".join(line.split())
                if not prompt:
                    continue
                seen[prompt] += 1  # a repeated prompt gets its own key; dedup rejects it later
                ident = f"{category}\t{prompt}\t{seen[prompt]}"
                items.append(self.item(stable_key("prm", ident), f"{path.name}:{n}", (category, prompt)))
        return items

    def load(self, item: WorkItem) -> Sample:
        category, prompt = item.ref
        if len(prompt) > self.config.filter.max_prompt_chars:
            raise Reject(f"prompt_too_long ({len(prompt)} > {self.config.filter.max_prompt_chars} chars)")
        if bad := _CONTROL.search(prompt):
            raise Reject(f"prompt has control characters ({bad.group()!r} at {bad.start()})")
        return Sample(key=item.key, split=item.split, category=category, prompt=prompt,
                      source=SourceInfo(kind="prompts", uri=item.uri, license=self.config.source.license))
