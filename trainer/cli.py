"""`twig train sft|grpo`, `twig eval` and `twig tokenize`: the trainer's command line."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from trainer.config import GRPOConfig, SFTConfig, apply_overrides

FLAGS = {  # the settings worth a flag of their own; every other one is reachable with --set
    "sft": ("data", "model", "out", "steps", "lr", "batch_size", "grad_accum", "lora_rank", "mixture",
            "limit", "seed", "resume"),
    "grpo": ("data", "model", "out", "steps", "lr", "group", "prompts_per_step", "beta", "lora_rank",
             "rewards", "prompts", "limit", "seed", "resume"),
}


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="stage", required=True)
    for stage, cls in (("sft", SFTConfig), ("grpo", GRPOConfig)):
        s = sub.add_parser(stage, help="supervised fine-tuning on the 9 TwiG tasks" if stage == "sft"
                           else "TwiG-GRPO with the reward ensemble")
        defaults = cls()
        kinds = {f.name: str(f.type) for f in fields(cls)}
        for name in FLAGS[stage]:
            value = getattr(defaults, name)
            shown = ",".join(value) if isinstance(value, list) else value
            s.add_argument(f"--{name.replace('_', '-')}", dest=f"flag_{name}", metavar=kinds[name].split(" ")[0].upper(),
                           help=f"default: {shown}")
        s.add_argument("--lora", action="store_true", help="LoRA (rank 16) instead of a full fine-tune")
        s.add_argument("--gradient-checkpointing", action="store_true")
        s.add_argument("--tensorboard", action="store_true", help="also log to <out>/tensorboard")
        s.add_argument("--no-progress", action="store_true")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other setting (see docs/training.md), e.g. --set warmup=100")
        s.set_defaults(config_cls=cls)


def config_from(args: argparse.Namespace) -> SFTConfig | GRPOConfig:
    cfg = args.config_cls()
    pairs = [f"{k[5:]}={v}" for k, v in vars(args).items() if k.startswith("flag_") and v is not None]
    if args.lora and cfg.lora_rank == 0:
        pairs.insert(0, "lora_rank=16")
    if args.gradient_checkpointing:
        pairs.append("gradient_checkpointing=true")
    if args.tensorboard:
        pairs.append("tensorboard=true")
    if args.no_progress:
        pairs.append("progress=false")
    return apply_overrides(cfg, pairs + list(args.set))


def run_train(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    if args.stage == "sft":
        from trainer.sft import train_sft as train
    else:
        from trainer.grpo import train_grpo as train
    final = train(cfg)
    print(f"twig train: done; checkpoint for `twig generate --model`: {final}", file=sys.stderr)
    print(final)
    return 0


def add_tokenize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="dataset folder written by `twig dataset`")
    p.add_argument("--model", "-m", default=None, help="the Janus checkpoint whose VQ encoder to use")
    p.add_argument("--cache", help="token folder (default: <data>/tokens)")
    p.add_argument("--device", default="auto")


def run_tokenize(args: argparse.Namespace) -> int:
    """Encode every image of a dataset with a model's VQ encoder into `<cache>/<fp>/<key>.tokens.npy`."""
    from tqdm import tqdm

    from generator.model import load_model
    from trainer.data import load_examples
    from trainer.vq import ImageTokenizer

    lm = load_model(args.model, args.device, "fp32")
    vq = ImageTokenizer(lm.model, args.cache or Path(args.data) / "tokens")
    for split in ("train", "val"):
        examples = load_examples(args.data, split)
        with tqdm(total=len(examples), desc=f"twig tokenize {split}", file=sys.stderr) as bar:
            vq.tokens_all(examples, bar.update)
    print(f"twig tokenize: {vq.encoded} images encoded, {vq.hits} already there, in {vq.cache}",
          file=sys.stderr)
    return 0
