"""The on-disk response cache, keyed by the hash of each request's canonical form.

It holds the raw response (and the status of a deterministic refusal such as HTTP 400), never the
parsed result, so a parser or filter change re-reads paid answers instead of buying them again.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
from pathlib import Path
from typing import Any


def canonical(body: dict[str, Any]) -> dict[str, Any]:
    """The request as it is keyed: data-URL images replaced by the hash of their bytes."""

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, str) and x.startswith("data:") and ";base64," in x:
            return "sha256:" + hashlib.sha256(x.encode()).hexdigest()
        return x

    return walk(body)


def request_key(kind: str, body: dict[str, Any]) -> str:
    blob = json.dumps([kind, canonical(body)], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Append-only segment files `<root>/<segment>.jsonl`, one line `<key>\t<entry JSON>` per
    response; each process appends to a segment of its own (no locks, one open file, no per-entry
    file creation). An index of every segment is read on first use. A line cut short by a kill is
    ignored, so a killed run loses at most the response it was writing. When two segments hold the
    same key (two processes asked at once), the first segment in name order wins, on every run."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._index: dict[str, tuple[Path, int, int]] | None = None
        self._own: Path | None = None
        self._writer = None

    def _load(self) -> dict[str, tuple[Path, int, int]]:
        if self._index is None:
            index: dict[str, tuple[Path, int, int]] = {}
            for seg in sorted(self.root.glob("*.jsonl")):
                offset = 0
                with open(seg, "rb") as f:
                    for line in f:
                        key, sep, _ = line.partition(b"\t")
                        if sep and line.endswith(b"\n") and len(key) == 64:
                            index.setdefault(key.decode("ascii", "replace"),
                                             (seg, offset + len(key) + 1, len(line) - len(key) - 2))
                        offset += len(line)
            self._index = index
        return self._index

    def get(self, key: str) -> dict[str, Any] | None:
        where = self._load().get(key)
        if where is None:
            return None
        seg, offset, length = where
        try:
            with open(seg, "rb") as f:
                f.seek(offset)
                return json.loads(f.read(length))
        except (OSError, ValueError):
            return None  # unreadable: ask again and append a fresh copy

    def put(self, key: str, entry: dict[str, Any]) -> None:
        index = self._load()
        if self._writer is None or self._writer.closed:
            self.root.mkdir(parents=True, exist_ok=True)
            self._own = self.root / f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
            self._writer = open(self._own, "ab")  # noqa: SIM115 - kept open for the process's life
        blob = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode()
        offset = self._writer.tell()
        self._writer.write(key.encode("ascii") + b"\t" + blob + b"\n")
        self._writer.flush()  # whole lines reach the OS at once: another reader sees all or none
        index.setdefault(key, (self._own, offset + len(key) + 1, len(blob)))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def __len__(self) -> int:
        return len(self._load()) if self.root.is_dir() else 0
