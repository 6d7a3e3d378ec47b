"""What SFT and GRPO runs share: the accelerate set-up, optimizer and schedule, progress output,
resume lookup and the final export.

Single device, DDP, FSDP and DeepSpeed all come from accelerate: run `twig train` plainly, or under
`accelerate launch --config_file <yours> -m pipeline train ...`; the code path is the same.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from trainer import checkpoints
from trainer.config import Common
from trainer.policy import TwigScorer, export_checkpoint, trainable_parameters

log = logging.getLogger("twig")


class Session:
    def __init__(self, cfg: Common):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        for name in ("accelerate", "accelerate.checkpointing", "accelerate.accelerator"):
            logging.getLogger(name).setLevel(logging.WARNING)   # per-file save/load chatter
        mp = cfg.mixed_precision
        if mp == "auto":
            mp = "bf16" if torch.cuda.is_available() else "no"
        if mp not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision {mp!r}: choose auto, bf16, fp16 or no")
        self.accelerator = Accelerator(mixed_precision=mp)
        set_seed(cfg.seed)
        self.model: Any = None
        self.optimizer: Any = None
        self.scheduler: Any = None

    # -- set-up ------------------------------------------------------------------------------
    def prepare(self, scorer: TwigScorer) -> None:
        from transformers import get_scheduler

        cfg = self.cfg
        params = trainable_parameters(scorer)
        if not params:
            raise ValueError("nothing to train: no parameter requires a gradient")
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
        sched = get_scheduler(cfg.schedule, opt, num_warmup_steps=cfg.warmup, num_training_steps=cfg.steps)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(scorer, opt, sched)

    @property
    def unwrapped(self) -> TwigScorer:
        return self.accelerator.unwrap_model(self.model)

    def maybe_no_sync(self, sync: bool):
        """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
        return contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model)

    def clip(self) -> float:
        if self.cfg.max_grad_norm and self.cfg.max_grad_norm > 0:
            norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
            return float(norm)
        return float("nan")

    def gather_lists(self, per_key: dict[str, list[float]]) -> dict[str, list[float]]:
        """Merge per-process lists of values (val losses) onto every process."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return per_key
        from accelerate.utils import gather_object

        merged: dict[str, list[float]] = {}
        for part in gather_object([per_key]):
            for k, v in part.items():
                merged.setdefault(k, []).extend(v)
        return merged

    # -- resume and export -------------------------------------------------------------------
    def resume_path(self) -> Path | None:
        mode = self.cfg.resume
        if mode == "never":
            return None
        if mode == "auto":
            return checkpoints.latest(Path(self.cfg.out))
        path = Path(mode)
        if not (path / checkpoints.STATE).is_file():
            raise ValueError(f"--resume {mode}: not a checkpoint folder (no {checkpoints.STATE})")
        return path

    def resume(self, kind: str) -> int:
        """Load the checkpoint `--resume` points at (if any) and return its step; a checkpoint
        written by another kind of run or other settings is refused."""
        path = self.resume_path()
        if path is None:
            return 0
        state = checkpoints.read_state(path)
        if state.get("kind") != kind or state.get("digest") != self.cfg.digest():
            raise ValueError(f"{path} was written by a run with other settings (digest "
                             f"{state.get('digest')} vs {self.cfg.digest()}); use a new --out, or "
                             "--resume never to start over there")
        step = checkpoints.load(self.accelerator, path)["step"]
        self.note(f"resumed from {path} at step {step}")
        return step

    def export(self, tokenizer: Any, meta: dict[str, Any]) -> Path:
        """`<out>/final`: a plain Janus checkpoint folder for `twig generate --model`."""
        acc = self.accelerator
        acc.wait_for_everyone()
        path = Path(self.cfg.out) / "final"
        if acc.is_main_process:
            export_checkpoint(self.unwrapped, tokenizer, path, meta)
        acc.wait_for_everyone()
        return path

    # -- output ------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        if self.accelerator.is_main_process:
            print(f"twig train: {text}", file=sys.stderr, flush=True)

    def bar(self, total: int, desc: str, initial: int = 0):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=f"twig {desc}", file=sys.stderr,
                    disable=not (self.cfg.progress and self.accelerator.is_main_process),
                    dynamic_ncols=True, leave=False)
