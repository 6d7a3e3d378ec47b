"""The deterministic shard plan: which inputs go to which split and which work unit.

The plan depends only on the config and the list of inputs, never on timing or worker count, so
every engine processes the same units and writes the same shards.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from pipeline.record import WorkItem


def split_of(key: str, val_fraction: float) -> str:
    """'val' for a stable hash-chosen share of keys, else 'train'."""
    h = int.from_bytes(hashlib.sha256(f"split:{key}".encode()).digest()[:8], "big")
    return "val" if h / 2**64 < val_fraction else "train"


@dataclass(frozen=True)
class Unit:
    """A work unit: the inputs that become one shard (or a few, past the byte limit)."""

    id: str  # e.g. train-00003
    split: str
    items: tuple[WorkItem, ...]
    digest: str  # config digest + the inputs' identity: a finished unit is reused only if it matches


def make_plan(items: list[WorkItem], config_digest: str, max_records: int) -> list[Unit]:
    """Per split, the fewest units of at most `max_records` inputs, of near-equal size (so workers
    finish together), in input order."""
    units: list[Unit] = []
    for split in ("train", "val"):
        mine = [it for it in items if it.split == split]
        count = -(-len(mine) // max_records)
        bounds = [round(i * len(mine) / count) for i in range(count + 1)] if count else [0]
        for n in range(count):
            chunk = tuple(mine[bounds[n]:bounds[n + 1]])
            ident = json.dumps([config_digest, [(it.key, it.uri) for it in chunk]])
            digest = hashlib.sha256(ident.encode()).hexdigest()
            units.append(Unit(f"{split}-{n:05d}", split, chunk, digest))
    return units


def largest_first(units: list[Unit]) -> list[Unit]:
    """The order engines hand units to workers: largest first, so workers finish together (stable,
    so equal units keep plan order)."""
    return sorted(units, key=lambda u: -len(u.items))
