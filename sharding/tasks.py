"""Expand a trajectory into TwiG's SFT task instances: think_k, reflect_k and generate_k per band.

- think_k: given the prompt, guides 1..k-1 and the image rows of bands 1..k-1, write guide k.
- reflect_k: given the prompt, guides 1..k and the image rows of bands 1..k, write reflection k.
- generate_k: given the prompt, guides 1..k and the rows of bands 1..k-1, draw band k. A band whose
  reflection rejected it is not a generation target (the image there is what should not be drawn),
  so a trajectory with a flagged band gives fewer than 3 generate instances, as in TwiG-50K.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from schemas import TwigRecord

TASKS = ("think", "reflect", "generate")


def expand(record: TwigRecord) -> list[dict[str, Any]]:
    """The task instances of one trajectory (up to 3 per band)."""
    out: list[dict[str, Any]] = []
    guides = [r.guide for r in record.regions]
    for k, region in enumerate(record.regions):
        r0, r1 = region.rows
        base = {"key": record.key, "band": k, "prompt": record.prompt, "category": record.category,
                "split": record.split}
        out.append({**base, "task": "think", "guides": guides[:k], "image_rows": [0, r0],
                    "target": {"guide": region.guide}})
        if region.reflection is not None:
            out.append({**base, "task": "reflect", "guides": guides[: k + 1], "image_rows": [0, r1],
                        "target": region.reflection.model_dump(mode="json")})
        if region.reflection is None or region.reflection.accepted:
            out.append({**base, "task": "generate", "guides": guides[: k + 1], "image_rows": [0, r0],
                        "target": {"image_rows": [r0, r1]}})
    return out


def task_name(instance: dict[str, Any]) -> str:
    return f"{instance['task']}_{instance['band'] + 1}"


def count_tasks(records: Iterable[TwigRecord]) -> dict[str, int]:
    """Counts per task type (think_1 ... generate_K) and per task family, plus the total."""
    counts: Counter[str] = Counter()
    for rec in records:
        for inst in expand(rec):
            counts[task_name(inst)] += 1
            counts[inst["task"]] += 1
            counts["total"] += 1
    ordered = {name: counts[name] for name in sorted(counts, key=_order)}
    return ordered


def _order(name: str) -> tuple:
    if name == "total":
        return (2, "", 0)
    if "_" not in name:
        return (1, TASKS.index(name), 0)
    fam, k = name.rsplit("_", 1)
    return (0, TASKS.index(fam), int(k))


def iter_instances(records: Iterable[TwigRecord]) -> Iterator[dict[str, Any]]:
    for rec in records:
        yield from expand(rec)
