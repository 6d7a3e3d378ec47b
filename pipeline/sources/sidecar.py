"""Prompts that travel with an image: a `.txt` (the prompt) or `.json` ({prompt, category, license})."""

from __future__ import annotations

import json

from pipeline.record import Reject


def parse_sidecar(name: str, data: bytes) -> dict:
    """{'prompt': ..., 'category': ..., 'license': ...} from a sidecar file's bytes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Reject(f"sidecar {name} is not valid UTF-8") from None
    if name.lower().endswith(".txt"):
        prompt = " ".join(text.split())
        return {"prompt": prompt} if prompt else {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise Reject(f"sidecar {name} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise Reject(f"sidecar {name} must hold a JSON object")
    out = {}
    for field in ("prompt", "caption", "text"):
        if isinstance(meta.get(field), str) and meta[field].strip():
            out["prompt"] = " ".join(meta[field].split())
            break
    for field in ("category", "license"):
        if isinstance(meta.get(field), str):
            out[field] = meta[field]
    return out
