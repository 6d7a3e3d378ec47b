"""stats.json: the funnel and task counts, derived from what is on disk (shards and rejects)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from schemas import TwigRecord, load_record
from sharding.reader import iter_samples
from sharding.tasks import count_tasks


def reason_code(reason: str) -> str:
    """The stable part of a reject reason ('too small (1x1, ...)' -> 'too small')."""
    for sep in (" (", ": "):
        reason = reason.split(sep, 1)[0]
    return reason.strip()


def read_records(root: Path, shard_paths: list[str]) -> list[TwigRecord]:
    out = []
    for rel in shard_paths:
        for sample in iter_samples(root / rel, exts=("json",)):
            out.append(load_record(sample["json"]))
    return out


def read_rejects(root: Path, unit_ids: list[str]) -> list[dict]:
    rows = []
    for uid in unit_ids:
        path = root / "rejects" / f"{uid}.jsonl"
        if path.is_file():
            rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return rows


def teacher_totals(markers: list[dict]) -> dict:
    """Teacher usage summed over the units' markers: responses used (fresh or cached) by role and
    model with their cost, and what the last run of each unit sent over the network."""
    by_role: dict[str, dict] = {}
    requests: dict[str, float] = {}
    for m in markers:
        t = m.get("teacher") or {}
        for key, b in t.get("spend", {}).items():
            acc = by_role.setdefault(key, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                           "images": 0, "cost_usd": 0.0})
            for f in ("calls", "prompt_tokens", "completion_tokens", "images"):
                acc[f] += b[f]
            acc["cost_usd"] += b["cost"]
        for k, v in t.get("requests", {}).items():
            requests[k] = requests.get(k, 0) + v
    for acc in by_role.values():
        acc["cost_usd"] = round(acc["cost_usd"], 6)
    return {"by_role": dict(sorted(by_role.items())),
            "cost_usd": round(sum(a["cost_usd"] for a in by_role.values()), 6),
            "last_run": {"requests": int(requests.get("requests", 0)),
                         "cache_hits": int(requests.get("cache_hits", 0)),
                         "retries": int(requests.get("retries", 0)),
                         "errors": int(requests.get("errors", 0)),
                         "cost_usd": round(requests.get("cost", 0.0), 6)}}


def build_stats(records: list[TwigRecord], rejects: list[dict], read: int,
                teacher: dict | None = None) -> dict:
    by_split = Counter(r.split for r in records)
    by_stage = Counter(r["stage"] for r in rejects)
    by_reason = Counter(f"{r['stage']}: {reason_code(r['reason'])}" for r in rejects)
    scores = [reg.reflection.score for r in records for reg in r.regions if reg.reflection]
    flagged = [reg for r in records for reg in r.regions if reg.reflection and not reg.reflection.accepted]
    guide_lens = [len(reg.guide) for r in records for reg in r.regions if reg.guide]
    return {
        "read": read,
        "written": {"train": by_split.get("train", 0), "val": by_split.get("val", 0),
                    "total": len(records)},
        "rejected": {"total": len(rejects), "by_stage": dict(sorted(by_stage.items())),
                     "by_reason": dict(sorted(by_reason.items()))},
        "categories": dict(sorted(Counter(r.category or "none" for r in records).items())),
        "tasks": count_tasks(records),
        "bands": {
            "reflected": len(scores),
            "flagged": len(flagged),
            "mean_score": round(sum(scores) / len(scores), 2) if scores else None,
            "mean_guide_chars": round(sum(guide_lens) / len(guide_lens), 1) if guide_lens else None,
        },
        "teacher": teacher or teacher_totals([]),
    }
