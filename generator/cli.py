"""`twig generate`: draw images for prompts with a Janus model, thinking between bands."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from generator.choice import Sampling
from generator.model import TINY, load_model, pick_device, pick_dtype
from generator.outputs import contact_sheet, digest, is_done, stem, write_result
from generator.prompts import PromptsError, read_prompts
from generator.sampler import Request, Trajectory, TwigSampler, TwigSettings
from generator.sequence import LAYOUTS
from sharding.atomic import write_json

log = logging.getLogger("twig")


def add_arguments(g: argparse.ArgumentParser) -> None:
    g.add_argument("--model", "-m", default=TINY,
                   help="Janus checkpoint: Hub id (deepseek-community/Janus-Pro-7B), local folder, or "
                   "'tiny' (default: a small random model, works offline, draws noise)")
    g.add_argument("--prompts", "-p", required=True,
                   help="a .txt (one per line) or .jsonl file, a twig dataset folder, or a prompt text")
    g.add_argument("--out", "-o", default="outputs/generate", help="output folder")
    g.add_argument("--limit", type=int, help="only the first N prompts")
    g.add_argument("--batch-size", "-b", type=int, default=16)
    g.add_argument("--seed", type=int, default=0, help="prompt i gets seed+i unless its line sets one")
    add_sampling_arguments(g)


def add_sampling_arguments(g: argparse.ArgumentParser) -> None:
    """How trajectories are sampled (shared by `twig generate` and `twig eval`)."""
    g.add_argument("--layout", choices=LAYOUTS, default="interleaved")
    g.add_argument("--bands", type=int, default=3, help="K bands on the token grid")
    g.add_argument("--no-think", dest="think", action="store_false", help="no guides")
    g.add_argument("--no-reflect", dest="reflect", action="store_false", help="no reflections")
    g.add_argument("--theta", type=int, default=90, help="redraw a band whose score is <= theta")
    g.add_argument("--cfg", type=float, default=5.0, help="classifier-free guidance scale")
    g.add_argument("--temperature", type=float, default=1.0, help="image tokens (0 = greedy)")
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--text-temperature", type=float, default=0.7)
    g.add_argument("--text-top-p", type=float, default=0.95)
    g.add_argument("--guide-tokens", type=int, default=40)
    g.add_argument("--reflect-tokens", type=int, default=56)
    g.add_argument("--device", default="auto", help="auto (GPU if there is one), cuda, cuda:N or cpu")
    g.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step into CUDA graphs (for GPUs; on a CPU Inductor "
                   "takes many minutes to compile)")


def settings_from(args: argparse.Namespace) -> TwigSettings:
    return TwigSettings(
        layout=args.layout, bands=args.bands, think=args.think, reflect=args.reflect, theta=args.theta,
        cfg=args.cfg, guide_tokens=args.guide_tokens, reflect_tokens=args.reflect_tokens,
        image=Sampling(args.temperature, args.top_k, args.top_p),
        text=Sampling(args.text_temperature, None, args.text_top_p))


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    items = read_prompts(args.prompts)
    if args.limit is not None:
        items = items[: args.limit]
    settings = settings_from(args)
    bands = len(settings.band_rows) if settings.band_rows else settings.bands
    for i, it in enumerate(items):
        if it.guides is not None and len(it.guides) != bands:
            raise PromptsError(f"{args.prompts}: prompt {i + 1} ({it.prompt[:40]!r}) comes with "
                               f"{len(it.guides)} guides, but the sampler draws {bands} bands (--bands)")
    dtype = pick_dtype(args.dtype, pick_device(args.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [it.seed if it.seed is not None else args.seed + i for i, it in enumerate(items)]
    digests = [digest({"model": args.model, "dtype": str(dtype), "settings": settings.to_json(),
                       "prompt": it.prompt, "seed": seeds[i], "guides": it.guides})
               for i, it in enumerate(items)]
    todo = [i for i in range(len(items)) if not is_done(out, i, digests[i])]
    if not todo:
        log.info("all %d prompt(s) already drawn in %s with these settings", len(items), out)
        contact_sheet(out, list(range(len(items))))
        return 0
    lm = load_model(args.model, args.device, args.dtype)
    if args.compile and lm.device.type != "cuda":
        log.warning("--compile on %s: Inductor may take many minutes to compile; it pays on a GPU", lm.device)
    sampler = TwigSampler(lm.model, lm.tokenizer, settings, grid=lm.grid, compile=args.compile)
    log.info("%d prompt(s): %d already drawn, %d to draw with %s on %s (%s), batches of %d",
             len(items), len(items) - len(todo), len(todo), lm.name, lm.device, str(lm.dtype).replace("torch.", ""),
             args.batch_size)
    drawn, redrawn, t_run = 0, 0, time.perf_counter()
    for start in range(0, len(todo), args.batch_size):
        batch = todo[start: start + args.batch_size]
        reqs = [Request(items[i].prompt, seeds[i], items[i].guides) for i in batch]
        trajs = sampler.generate(reqs)
        pixels = sampler.decode_images(trajs)
        timings = dict(sampler.timings)
        for j, i in enumerate(batch):
            trace = make_trace(i, items[i].key, trajs[j], lm, settings, timings, len(batch), digests[i],
                               pixels.shape[1:3])
            write_result(out, i, pixels[j].numpy(), trace)
            redrawn += sum(b.regenerated for b in trajs[j].bands)
        drawn += len(batch)
        log.info("drew %d/%d (%.2f images/s)", drawn, len(todo), drawn / (time.perf_counter() - t_run))
    sheet = contact_sheet(out, list(range(len(items))))
    elapsed = time.perf_counter() - t_run
    write_json(out / "run.json", {
        "model": lm.name, "device": str(lm.device), "dtype": str(lm.dtype).replace("torch.", ""),
        "prompts": len(items), "drawn": drawn, "skipped": len(items) - drawn, "bands_redrawn": redrawn,
        "seconds": round(elapsed, 3), "images_per_s": round(drawn / elapsed, 4) if drawn else None,
        "batch_size": args.batch_size, "settings": settings.to_json()})
    log.info("wrote %d image(s) + traces to %s%s", drawn, out,
             f", contact sheet {sheet.name}" if sheet else "")
    if lm.name == TINY:
        log.info("note: the tiny model has random weights, so its images are noise")
    return 0


def make_trace(index: int, key: str | None, traj: Trajectory, lm, settings: TwigSettings,
               timings: dict[str, float], batch: int, want: str, size) -> dict:
    return {
        "index": index, "key": key, "prompt": traj.prompt, "seed": traj.seed, "digest": want,
        "model": lm.name, "device": str(lm.device), "dtype": str(lm.dtype).replace("torch.", ""),
        "layout": settings.layout, "settings": settings.to_json(),
        "image": {"file": f"{stem(index)}.png", "height": int(size[0]), "width": int(size[1]),
                  "grid": list(lm.grid), "tokens": _tokens(traj.image_tokens)},
        "bands": [{"index": b.index, "rows": list(b.rows), "guide": b.guide,
                   "guide_truncated": b.guide_truncated, "reflection": b.reflection,
                   "regenerated": b.regenerated, "first_attempt": b.first_attempt,
                   "first_draw_tokens": _tokens(traj.first_draws.get(b.index))} for b in traj.bands],
        "timings": {"batch_size": batch, **{k: round(v, 4) for k, v in timings.items()}},
    }


def _tokens(ids: list[int] | None) -> str | None:
    """Image tokens as one line of space-separated ids (raster order), to keep traces readable."""
    return None if ids is None else " ".join(map(str, ids))
