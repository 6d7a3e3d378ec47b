"""Trainer throughput: SFT tokens/s (full fine-tune and LoRA, the ratio between them, MFU on a GPU)
and one TwiG-GRPO step's time split into rollout, reward and learning.

    python bench/train.py                       # tiny random Janus on CPU (what CI machines have)
    python bench/train.py --model deepseek-community/Janus-Pro-1B   # a real checkpoint, on a GPU

It builds a small synthetic dataset with the pipeline first (in a temporary folder). Figures go to
stdout as JSON; docs/benchmarks.md records them with the machine they came from.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}   # dense bf16 FLOP/s


def dataset(root: Path, count: int) -> Path:
    from pipeline.config import load_config
    from pipeline.driver import build

    out = root / "data"
    build(load_config(None, [f"source.count={count}", "run.progress=false", f"run.out={out}"]))
    return out


def sft_rate(data: Path, out: Path, model: str | None, lora: int, steps: int, batch: int) -> dict:
    from trainer.config import SFTConfig
    from trainer.sft import SFTRun

    run = SFTRun(SFTConfig(data=str(data), out=str(out), model=model, steps=steps, lr=1e-5, batch_size=batch,
                           lora_rank=lora, save_every=0, val_every=0, progress=False,
                           gradient_checkpointing=torch.cuda.is_available()))
    batches = [run.micro_batch(s, 0) for s in range(steps + 2)]
    run.learn([batches[0]])                                   # warm-up
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    tokens = 0
    for b in batches[1: steps + 1]:
        tokens += run.learn([b])["tokens"]
    sync()
    dt = time.perf_counter() - t0
    params = sum(p.numel() for p in run.session.unwrapped.core.model.language_model.parameters())
    out_ = {"lora_rank": lora, "steps": steps, "batch": batch, "tokens": tokens, "seconds": round(dt, 3),
            "tokens_per_s": round(tokens / dt, 1), "lm_params": params}
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        if peak:
            out_["mfu"] = round(6 * params * tokens / dt / peak, 4)   # 6N FLOPs per trained token
    return out_


def grpo_split(data: Path, out: Path, model: str | None, steps: int) -> dict:
    from trainer.config import GRPOConfig
    from trainer.grpo import GRPORun

    run = GRPORun(GRPOConfig(data=str(data), out=str(out), model=model, steps=steps, group=8,
                             prompts_per_step=1, guide_tokens=40, reflect_tokens=56, save_every=0,
                             progress=False, limit=8))
    rows = [run.train_step() for _ in range(steps)]
    keys = ("rollout_s", "reward_s", "learn_s")
    mean = {k: round(sum(r[k] for r in rows) / len(rows), 3) for k in keys}
    total = sum(mean.values())
    return {"group": 8, "steps": steps, **mean, "share": {k: round(v / total, 3) for k, v in mean.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None, help="Janus checkpoint (default: the tiny random one)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        root = Path(tmp)
        data = dataset(root, 48)
        full = sft_rate(data, root / "full", args.model, 0, args.steps, args.batch)
        lora = sft_rate(data, root / "lora", args.model, 16, args.steps, args.batch)
        grpo = grpo_split(data, root / "grpo", args.model, max(2, args.steps // 4))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {args.threads} thread(s)"
    print(json.dumps({"device": device, "model": args.model or "tiny", "sft_full": full, "sft_lora": lora,
                      "lora_vs_full_tokens_per_s": round(lora["tokens_per_s"] / full["tokens_per_s"], 3),
                      "grpo_step": grpo}, indent=2))


if __name__ == "__main__":
    main()
