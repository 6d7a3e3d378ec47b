"""What to draw: prompts from a text file, a JSON-lines file, a twig dataset folder, or one string.

- `.txt` (or any text file): one prompt per line; blank lines and lines starting with `#` skipped.
- `.jsonl`: one object per line with `prompt`, and optionally `seed` (int), `guides` (K strings,
  teacher-forced instead of written by the model) and `key`.
- a dataset folder written by `twig dataset` (it has `manifest.json`): each trajectory's prompt,
  its guides and its key.
- anything else that does not look like a path: the text itself is the one prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class PromptsError(ValueError):
    """The prompts given cannot be read; the message names the file and line."""


@dataclass
class PromptItem:
    prompt: str
    seed: int | None = None
    guides: list[str] | None = None
    key: str | None = None


def read_prompts(spec: str) -> list[PromptItem]:
    path = Path(spec)
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise PromptsError(f"{spec} is a folder without manifest.json; give a prompts file or a "
                               "dataset folder written by `twig dataset`")
        return _from_dataset(path)
    if path.is_file():
        items = _from_jsonl(path) if path.suffix.lower() == ".jsonl" else _from_text(path)
        if not items:
            raise PromptsError(f"{spec} holds no prompts")
        return items
    if "/" in spec or "\\" in spec or path.suffix.lower() in (".txt", ".jsonl", ".json", ".csv"):
        raise PromptsError(f"no such prompts file: {spec}")
    if not spec.strip():
        raise PromptsError("the prompt is empty")
    return [PromptItem(spec.strip())]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PromptsError(f"{path} is not UTF-8 text (byte {e.start})") from None


def _from_text(path: Path) -> list[PromptItem]:
    lines = (line.strip() for line in _read_text(path).splitlines())
    return [PromptItem(line) for line in lines if line and not line.startswith("#")]


def _from_jsonl(path: Path) -> list[PromptItem]:
    items = []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise PromptsError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise PromptsError(f"{where}: expected an object with a 'prompt', got {type(obj).__name__}")
        prompt = obj.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptsError(f"{where}: 'prompt' must be a non-empty string")
        seed = obj.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise PromptsError(f"{where}: 'seed' must be a non-negative integer")
        guides = obj.get("guides")
        if guides is not None and (not isinstance(guides, list) or not all(isinstance(g, str) for g in guides)):
            raise PromptsError(f"{where}: 'guides' must be a list of strings")
        key = obj.get("key")
        items.append(PromptItem(prompt.strip(), seed, guides, str(key) if key is not None else None))
    return items


def _from_dataset(root: Path) -> list[PromptItem]:
    from sharding.stats import read_records

    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        shards = [s["path"] for s in manifest["shards"]]
    except (ValueError, KeyError, TypeError) as e:
        raise PromptsError(f"{root}/manifest.json is not a twig manifest ({e})") from None
    items = []
    for rec in read_records(root, shards):
        guides = [r.guide for r in rec.regions] if all(r.guide for r in rec.regions) else None
        items.append(PromptItem(rec.prompt, None, guides, rec.key))
    if not items:
        raise PromptsError(f"dataset {root} holds no trajectories")
    return items
