"""The model being trained: a Janus checkpoint (or the tiny random one), what of it learns, and
how it is saved so `twig generate --model <dir>` loads it.

`TwigScorer` wraps the model in one module whose forward is the teacher-forced two-head
log-probability (`generator.scoring.sequence_logps`), so accelerate's DDP/FSDP wrapper sees every
forward. Trainable by default: the language model, both heads and the image-generation aligner
(the VQ model, the understanding encoder and the codebook embedding stay frozen, as in Janus-Pro's
own fine-tuning); with LoRA, only the adapters on the language model's projections learn.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generator.model import LoadedModel, load_model
from generator.scoring import sequence_logps

log = logging.getLogger("twig")

TRAINABLE = ("model.language_model.", "lm_head.", "model.generation_head.", "model.generation_aligner.")
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0


class TwigScorer(nn.Module):
    """forward(ids, is_img, mask, target) -> (N, T) log-probs of the targets under the policy."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    @property
    def core(self):
        """The JanusForConditionalGeneration inside (with LoRA layers injected, if any)."""
        p = self.policy
        return p.base_model.model if hasattr(p, "peft_config") else p

    @property
    def is_lora(self) -> bool:
        return hasattr(self.policy, "peft_config")

    def forward(self, ids: torch.Tensor, is_img: torch.Tensor, mask: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        return sequence_logps(self.core, ids, is_img, mask, target)


def load_policy(name: str | None, lora: LoraSpec | None = None, gradient_checkpointing: bool = False,
                device: str = "cpu") -> tuple[TwigScorer, LoadedModel]:
    """The policy in fp32 master weights (accelerate's mixed precision runs the bf16 compute)."""
    loaded = load_model(name, device=device, dtype="fp32")
    model = loaded.model
    for pname, p in model.named_parameters():
        p.requires_grad_(pname.startswith(TRAINABLE))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                         target_modules=LORA_TARGETS)
        model = get_peft_model(model, cfg)
    model.train()
    return TwigScorer(model), loaded


def trainable_parameters(scorer: TwigScorer) -> list[nn.Parameter]:
    return [p for p in scorer.parameters() if p.requires_grad]


def count_parameters(scorer: TwigScorer) -> dict[str, int]:
    total = sum(p.numel() for p in scorer.parameters())
    return {"total": total, "trainable": sum(p.numel() for p in trainable_parameters(scorer))}


def export_checkpoint(scorer: TwigScorer, tokenizer: Any, path: Path, meta: dict[str, Any]) -> Path:
    """Write a plain Janus checkpoint folder (LoRA merged in) that `load_model` reads, atomically:
    into a temporary folder first, then renamed over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if scorer.is_lora:
        import copy

        model = copy.deepcopy(scorer.policy).merge_and_unload()
    else:
        model = scorer.core
    was_training = model.training
    model.eval()
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "twig_train.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if was_training:
        model.train()
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path
