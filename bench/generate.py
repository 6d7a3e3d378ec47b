"""Images/s of TwiG sampling against plain `generate(generation_mode="image")`, in one run.

    .venv/bin/python bench/generate.py [--shape tiny|1b|7b] [--batch 16] [--repeats 3] [--compile]

Both sides draw `--batch` images with CFG 5 and temperature 1 on the same model and decode them
with the VQ decoder. TwiG runs K=3 bands with 40-token guides and a reflection after every band
(`--reflect-tokens`, 48 by default: a score and a 40-token revised guide); with random weights the
model writes noise, so guides and reflections run to their token limits and no reflection parses,
so nothing is redrawn. A third row forces a low score on band 2 of one prompt per batch: the cost
of a redraw, which the whole batch pays in lockstep. `tiny` is the small random model (CPU);
`1b`/`7b` are random-weight models with Janus-Pro-1B/-7B's real shapes (bf16, GPU). Runs
alternate and medians are reported, after one warm-up of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from generator.choice import Sampling  # noqa: E402
from generator.model import janus_pro_config, pick_device, tiny_model, tiny_tokenizer  # noqa: E402
from generator.sampler import Request, TwigSampler, TwigSettings  # noqa: E402

PROMPTS = (ROOT / "assets" / "t2i-compbench" / "color_val.txt").read_text().splitlines()


def build(shape: str, device: torch.device):
    if shape == "tiny":
        model, tok = tiny_model(seed=0)
        return model.to(device), tok
    from transformers import JanusForConditionalGeneration

    config = janus_pro_config(shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = JanusForConditionalGeneration._from_config(config, dtype=torch.bfloat16).eval()
    tok = tiny_tokenizer()        # ids stay within the real vocabulary; text length is what counts
    gen = model.generation_config
    gen.generation_kwargs = {"boi_token_id": tok.convert_tokens_to_ids("<begin_of_image>")}
    gen.pad_token_id, gen.bos_token_id = tok.pad_token_id, tok.bos_token_id
    return model, tok


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain(model, sampler: TwigSampler, prompts: list[str], device) -> float:
    fmt = sampler.format
    rows = [fmt.prompt_ids(p) + [fmt.special.boi] for p in prompts]
    width = max(map(len, rows))
    ids = torch.tensor([[fmt.special.pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        tokens = model.generate(input_ids=ids, attention_mask=mask, generation_mode="image", do_sample=True,
                                guidance_scale=5.0, temperature=1.0)
        model.decode_image_tokens(tokens)
    sync(device)
    return time.perf_counter() - t0


def twig(sampler: TwigSampler, reqs: list[Request], device) -> tuple[float, int]:
    sync(device)
    t0 = time.perf_counter()
    trajs = sampler.generate(reqs)
    sampler.decode_images(trajs)
    sync(device)
    return time.perf_counter() - t0, sum(b.regenerated for t in trajs for b in t.bands)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["tiny", "1b", "7b"], default="tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reflect-tokens", type=int, default=48)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile TwiG's decode step")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (tiny)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.shape != "tiny" and device.type != "cuda":
        print(f"--shape {args.shape} wants a GPU; this machine has none", file=sys.stderr)
        return 2
    model, tok = build(args.shape, device)
    settings = TwigSettings(bands=3, guide_tokens=40, reflect_tokens=args.reflect_tokens, think=True,
                            reflect=True, cfg=5.0, image=Sampling(1.0), text=Sampling(1.0))
    sampler = TwigSampler(model, tok, settings, compile=args.compile)
    prompts = PROMPTS[: args.batch]
    reqs = [Request(p, seed=i) for i, p in enumerate(prompts)]
    low = " score 20; revised guide: " + "more detail " * 6
    redo = [Request(p, seed=i, reflections=[None, low, None] if i == 0 else None) for i, p in enumerate(prompts)]
    plain(model, sampler, prompts, device)
    twig(sampler, reqs, device)
    times: dict[str, list[float]] = {"plain": [], "twig": [], "twig_redraw": []}
    redrawn = 0
    for _ in range(args.repeats):
        times["plain"].append(plain(model, sampler, prompts, device))
        times["twig"].append(twig(sampler, reqs, device)[0])
        t, redrawn = twig(sampler, redo, device)
        times["twig_redraw"].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    ips = {k: args.batch / v for k, v in med.items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({args.threads} thread)"
    print(f"device: {name}; shape {args.shape}; batch {args.batch}; repeats {args.repeats}; "
          f"compile {args.compile}; reflect tokens {args.reflect_tokens}")
    print("| run | s per batch (median) | images/s | vs plain |")
    print("|---|---:|---:|---:|")
    for k in ("plain", "twig", "twig_redraw"):
        print(f"| {k} | {med[k]:.3f} | {ips[k]:.3f} | {ips[k] / ips['plain']:.3f} |")
    print(json.dumps({"shape": args.shape, "device": name, "batch": args.batch, "compile": args.compile,
                      "seconds": times, "images_per_s": ips, "ratio_twig": ips["twig"] / ips["plain"],
                      "ratio_twig_redraw": ips["twig_redraw"] / ips["plain"], "bands_redrawn": redrawn}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
