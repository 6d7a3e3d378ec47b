"""Deterministic WebDataset tar shards: fixed member metadata, written to a temp name, renamed.

Members follow WebDataset's own TarWriter layout (`<key>.<ext>`, extensions sorted); we write them
with `tarfile` directly because importing webdataset pulls in torch, seconds per worker process.

A unit's records go to `<unit>.tar`; past `max_bytes` the writer continues in `<unit>_1.tar`, ...
The bytes depend only on the records, so every engine and every resumed run writes the same shards.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from sharding.atomic import write_bytes

FIXED_MTIME = 946684800  # 2000-01-01: no wall-clock time in any member header


@dataclass
class ShardFile:
    path: str  # relative to the dataset folder
    split: str
    records: int
    bytes: int
    sha256: str

    def as_dict(self) -> dict:
        return {"path": self.path, "split": self.split, "records": self.records,
                "bytes": self.bytes, "sha256": self.sha256}


def tar_bytes(samples: list[dict[str, bytes | str]]) -> bytes:
    """The tar image of samples ({'__key__': key, ext: bytes, ...}) with fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for s in samples:
            key = s["__key__"]
            for ext in sorted(k for k in s if not k.startswith("__")):
                data = s[ext].encode() if isinstance(s[ext], str) else s[ext]
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o444
                info.uname = info.gname = "twig"
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_unit_shards(root: Path, unit_id: str, split: str, samples: list[dict],
                      max_bytes: int) -> list[ShardFile]:
    """Write a unit's samples as one or more shards under root/shards; return what was written."""
    parts: list[list[dict]] = [[]]
    size = 0
    for s in samples:
        n = sum(len(v) + 1024 for k, v in s.items() if k != "__key__")
        if parts[-1] and size + n > max_bytes:
            parts.append([])
            size = 0
        parts[-1].append(s)
        size += n
    out = []
    for p, members in enumerate(parts):
        if not members:  # a unit whose inputs were all rejected writes no shard
            continue
        name = f"shards/{unit_id}.tar" if p == 0 else f"shards/{unit_id}_{p}.tar"
        data = tar_bytes(members)
        write_bytes(root / name, data)
        out.append(ShardFile(name, split, len(members), len(data), hashlib.sha256(data).hexdigest()))
    return out
