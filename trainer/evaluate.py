"""`twig eval`: draw the T2I-CompBench val prompts with a model and score them by category.

Images are drawn by `twig generate` itself (same sampler, same traces, same resume: a rerun draws
only what is missing), then scored with the reward plug-ins as T2I-CompBench scores each category:

    color, shape, texture        BLIP-VQA (attribute binding)     reward `vqa`
    non_spatial                  CLIP score                         reward `clip`
    spatial, 3d_spatial          GroundingDINO boxes (relations)   reward `detector`
    numeracy                     GroundingDINO counts               reward `detector`
    complex                      mean of the three                  `vqa`, `detector`, `clip`

Scorer checkpoints default to tiny random models (offline smoke runs: the numbers mean nothing and
the table says so); name real ones with --vqa/--clip/--detector.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from PIL import Image

from generator.model import TINY
from sharding.atomic import write_bytes, write_json, write_jsonl
from trainer.rewards import DEFAULT_MODELS, build
from trainer.rewards.base import Sample

log = logging.getLogger("twig")

CATEGORIES = ("color", "shape", "texture", "spatial", "3d_spatial", "non_spatial", "numeracy", "complex")
SCORERS: dict[str, tuple[str, ...]] = {
    "color": ("vqa",), "shape": ("vqa",), "texture": ("vqa",), "non_spatial": ("clip",),
    "spatial": ("detector",), "3d_spatial": ("detector",), "numeracy": ("detector",),
    "complex": ("vqa", "detector", "clip"),
}


class EvalError(ValueError):
    """The evaluation cannot run as asked; the message says why."""


def add_arguments(g: argparse.ArgumentParser) -> None:
    from generator.cli import add_sampling_arguments

    g.add_argument("--model", "-m", default=TINY, help="Janus checkpoint (Hub id or folder, e.g. the "
                   "`final` folder `twig train` wrote), or 'tiny'")
    g.add_argument("--out", "-o", default="outputs/eval")
    g.add_argument("--prompts-dir", default="assets/t2i-compbench",
                   help="folder with T2I-CompBench's <category>_val.txt files")
    g.add_argument("--categories", default=",".join(CATEGORIES), help="comma-separated subset")
    g.add_argument("--limit", type=int, default=8, help="prompts per category (the first n; 0 = all)")
    g.add_argument("--batch-size", "-b", type=int, default=16)
    g.add_argument("--seed", type=int, default=0)
    for name in ("vqa", "clip", "detector"):
        g.add_argument(f"--{name}", default="tiny",
                       help=f"{name} scorer checkpoint (real: {DEFAULT_MODELS[name]}; default tiny random)")
    g.add_argument("--scorer-device", default="cpu", help="device for the scorers")
    add_sampling_arguments(g)


def collect_prompts(prompts_dir: Path, categories: list[str], limit: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for cat in categories:
        if cat not in SCORERS:
            raise EvalError(f"unknown category {cat!r}; T2I-CompBench has {', '.join(CATEGORIES)}")
        path = prompts_dir / f"{cat}_val.txt"
        if not path.is_file():
            raise EvalError(f"no {path}: --prompts-dir must hold T2I-CompBench's <category>_val.txt files")
        lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        for i, prompt in enumerate(lines[: limit or None]):
            rows.append({"prompt": prompt, "key": f"{cat}-{i:04d}", "seed": seed + len(rows)})
    if not rows:
        raise EvalError("no prompt to evaluate")
    return rows


def run(args: argparse.Namespace) -> int:
    from generator import cli as gen_cli

    out = Path(args.out)
    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    rows = collect_prompts(Path(args.prompts_dir), categories, args.limit, args.seed)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "prompts.jsonl", rows)
    gen_args = argparse.Namespace(**{**vars(args), "prompts": str(out / "prompts.jsonl"),
                                     "out": str(out / "images"), "limit": None})
    gen_cli.run(gen_args)
    table = score(out, rows, {n: getattr(args, n) for n in ("vqa", "clip", "detector")}, args.scorer_device)
    table["model"] = args.model
    write_json(out / "table.json", table)
    write_bytes(out / "table.md", render_table(table).encode("utf-8"))
    print(render_table(table))
    log.info("wrote %s and %s", out / "table.md", out / "table.json")
    return 0


def score(out: Path, rows: list[dict[str, Any]], checkpoints: dict[str, str], device: str) -> dict[str, Any]:
    """Score every drawn image with its category's scorers; per-sample lines and the table."""
    images = out / "images"
    samples: dict[str, list[tuple[dict, Sample]]] = {}
    for i, row in enumerate(rows):
        trace = json.loads((images / f"{i:05d}.json").read_text(encoding="utf-8"))
        if trace.get("key") != row["key"]:
            raise EvalError(f"{images}/{i:05d}.json holds {trace.get('key')!r}, expected {row['key']!r}; "
                            "remove the folder and run again")
        cat = row["key"].rsplit("-", 1)[0]
        with Image.open(images / trace["image"]["file"]) as im:
            sample = Sample(row["prompt"], im.convert("RGB"), cat)
        samples.setdefault(cat, []).append((row, sample))
    needed = sorted({s for cat in samples for s in SCORERS[cat]})
    scorers = {name: build(f"{name}={checkpoints[name]}", device=device) for name in needed}
    lines, per_cat = [], {}
    for cat, items in samples.items():
        batch = [s for _, s in items]
        parts = {name: scorers[name].score(batch) for name in SCORERS[cat]}
        values = [sum(parts[n][j] for n in parts) / len(parts) for j in range(len(batch))]
        for (row, _), v, j in zip(items, values, range(len(batch)), strict=True):
            lines.append({"key": row["key"], "prompt": row["prompt"], "category": cat, "score": v,
                          **{f"score_{n}": parts[n][j] for n in parts}})
        per_cat[cat] = {"n": len(values), "score": sum(values) / len(values), "scorers": list(SCORERS[cat])}
    write_jsonl(out / "scores.jsonl", lines)
    ordered = {c: per_cat[c] for c in CATEGORIES if c in per_cat}
    smoke = [n for n in needed if checkpoints[n] in ("tiny", "", None)]
    return {"categories": ordered, "mean": sum(v["score"] for v in ordered.values()) / len(ordered),
            "scorers": {n: scorers[n].describe() for n in needed}, "smoke": bool(smoke),
            "tiny_scorers": smoke}


def render_table(table: dict[str, Any]) -> str:
    lines = [f"# T2I-CompBench (val) — {table.get('model', '?')}", ""]
    if table.get("smoke") or table.get("model") in (TINY, None):
        lines += ["> Smoke run: tiny random model and/or scorers " + ", ".join(table.get("tiny_scorers", []))
                  + "; these numbers check the plumbing and mean nothing about image quality.", ""]
    lines += ["| category | prompts | score | scored by |", "|---|---|---|---|"]
    for cat, v in table["categories"].items():
        lines.append(f"| {cat} | {v['n']} | {v['score']:.4f} | {', '.join(v['scorers'])} |")
    lines += [f"| **mean** | {sum(v['n'] for v in table['categories'].values())} | {table['mean']:.4f} | |", ""]
    return "\n".join(lines)
