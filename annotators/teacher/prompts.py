"""Versioned prompt templates (`prompts/<name>.v<N>.txt`), each with a [system] and a [user] part.

A template's name and version (e.g. `guide.v1`) go into every record's `teacher` provenance and
into every request, so a changed template is a new version and never mixes with an old one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

HERE = Path(__file__).parent / "prompts"

# The template version each role uses now.
CAPTION = "caption.v1"
BANDS = "bands.v1"
DRAW = "draw.v1"
GUIDE = "guide.v1"
REFLECT = "reflect.v1"
JUDGE = "judge.v1"
JSON_INSTRUCTIONS = "json.v1"
REPAIR = "repair.v1"


@dataclass(frozen=True)
class Prompt:
    version: str
    system: str
    user: str


@cache
def _read(version: str) -> str:
    path = HERE / f"{version}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template {path}")
    return path.read_text(encoding="utf-8")


def render(version: str, **values: object) -> Prompt:
    text = _read(version)
    parts = dict(re.findall(r"^\[(system|user)\]\n(.*?)(?=^\[(?:system|user)\]\n|\Z)", text, re.S | re.M))
    if not parts:
        parts = {"user": text}
    fill = {k: str(v) for k, v in values.items()}
    return Prompt(version, parts.get("system", "").strip().format(**fill),
                  parts.get("user", "").strip().format(**fill))
