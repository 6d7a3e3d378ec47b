"""Training settings (SFT and TwiG-GRPO), their defaults, and the digest a resume checks.

Defaults: SFT as a full fine-tune at lr 1e-5 (LoRA when `lora_rank` > 0); GRPO from the closest
public recipe (T2I-R1 / TwiG-GRPO): group G=8, beta=0.01 (k3 KL), lr=1e-6, clip eps 0.2.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# settings that can change between a run and its resume without changing what it computes
RESUMABLE = {"steps", "out", "save_every", "val_every", "log_every", "keep", "tensorboard", "progress",
             "resume"}


@dataclass
class Common:
    data: str = "data/twig-synthetic"     # dataset folder from `make dataset`, or a Hub dataset id
    model: str | None = None               # Janus checkpoint (Hub id or folder); None: tiny random
    out: str = "outputs/train"
    steps: int = 100
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup: int = 0
    schedule: str = "constant_with_warmup"  # any transformers scheduler name
    max_grad_norm: float = 1.0
    lora_rank: int = 0                     # 0: full fine-tune
    lora_alpha: int = 32
    gradient_checkpointing: bool = False
    mixed_precision: str = "auto"          # auto (bf16 on GPU, fp32 on CPU), bf16, fp16, no
    seed: int = 0
    limit: int | None = None               # use only the first n trajectories (by key)
    save_every: int = 50
    keep: int = 2
    log_every: int = 1
    tensorboard: bool = False
    progress: bool = True
    resume: str = "auto"                   # auto | never | a checkpoint folder

    def digest(self) -> str:
        data = {k: v for k, v in asdict(self).items() if k not in RESUMABLE}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SFTConfig(Common):
    batch_size: int = 4                    # instances per micro-batch per process
    grad_accum: int = 1
    mixture: str = "think=1,reflect=1,generate=1"
    uncond_prob: float = 0.1               # share of generate instances trained unconditionally (CFG)
    max_length: int | None = None          # drop instances longer than this (counted in the log)
    detailed_reflections: bool = False     # train the long reflection form (criteria, critique)
    token_cache: str | None = None         # default: <data>/tokens for a folder, else <out>/tokens
    val_every: int = 50
    val_limit: int = 64                    # val instances per evaluation


@dataclass
class GRPOConfig(Common):
    lr: float = 1e-6
    steps: int = 50
    prompts_per_step: int = 2
    group: int = 8                         # G rollouts per prompt
    rollout_batch: int = 16                # rollouts sampled together
    micro_batch: int = 4                   # rollouts per backward
    beta: float = 0.01                     # k3 KL to the reference
    clip_eps: float = 0.2
    inner_steps: int = 1                   # optimizer steps per batch of rollouts (mu)
    rewards: list[str] = field(default_factory=lambda: ["scene"])
    reward_weights: list[float] | None = None
    reference: str = "auto"                # auto: adapters disabled under LoRA, else a frozen copy
    prompts: str | None = None             # a prompts file instead of the dataset's prompts
    bands: int = 3
    theta: int = 90
    cfg: float = 5.0
    guide_tokens: int = 40
    reflect_tokens: int = 56
    image_temperature: float = 1.0
    text_temperature: float = 0.7
    val_every: int = 0


def apply_overrides(cfg: Common, pairs: list[str]) -> Common:
    """`key=value` pairs onto a config, typed by the field's default (lists are comma-separated)."""
    known = {f.name: f for f in fields(cfg)}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: write key=value")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in known:
            raise ValueError(f"--set {key}: unknown setting; known: {', '.join(sorted(known))}")
        setattr(cfg, key, _typed(getattr(cfg, key), value, key, str(known[key].type)))
    return cfg


def _typed(current: Any, value: str, key: str, kind: str) -> Any:
    """`kind` is the field's annotation as written (`int | None`, `list[str]`, ...)."""
    if value.lower() in ("none", "null", ""):
        if "None" not in kind:
            raise ValueError(f"--set {key}: a value is required")
        return None
    try:
        if kind.startswith("bool"):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("list"):
            items = [v.strip() for v in value.split(",") if v.strip()]
            return [float(v) for v in items] if "float" in kind else items
    except ValueError:
        raise ValueError(f"--set {key}={value!r}: expected {kind}") from None
    return value
