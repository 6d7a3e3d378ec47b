"""Choosing the next token: temperature, top-k, top-p, and per-sample seeds that ignore batching.

Sampling is the Gumbel-max trick, `argmax(logits / T + g)`, which draws exactly from the softmax.
The Gumbel noise `g` is a counter-based hash of (sample seed, stream, step, vocabulary index), so a
sample's draws depend on its own seed only: a batch of prompts gives the same tokens as the same
prompts one at a time, on any device, and nothing holds generator state (CUDA-graph friendly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# splitmix64 constants as signed int64 (torch has no uint64 arithmetic).
_GOLDEN = -7046029254386353131     # 0x9E3779B97F4A7C15
_MIX1 = -4658895280553007687       # 0xBF58476D1CE4E5B9
_MIX2 = -7723592293110705685       # 0x94D049BB133111EB
_STEP = 0x2545F4914F6CDD1D


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens. temperature 0 means greedy (argmax)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _signed(value: int) -> int:
    """A Python int wrapped to the int64 range (two's complement), as torch's int64 math wraps."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return x ^ _shr(x, 31)


def uniform(seeds: torch.Tensor, stream: int, step: int, n: int) -> torch.Tensor:
    """(B, n) floats in (0, 1), a pure function of (seed, stream, step, column)."""
    offset = _signed((stream * 1_000_003 + step) * _STEP)
    base = _mix(seeds.to(torch.int64) * _GOLDEN + offset)
    x = _mix(base[:, None] + torch.arange(n, device=seeds.device, dtype=torch.int64)[None] * _GOLDEN)
    return (_shr(x, 40).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def filter_logits(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """Scale by temperature and drop what top-k / top-p exclude (set to -inf)."""
    out = logits / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < out.shape[-1]:
        kth = torch.topk(out, sampling.top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if sampling.top_p is not None and sampling.top_p < 1:
        sorted_, order = torch.sort(out, dim=-1, descending=True)
        probs = torch.softmax(sorted_, dim=-1)
        drop_sorted = probs.cumsum(-1) - probs >= sampling.top_p   # keeps the top token always
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def choose(logits: torch.Tensor, seeds: torch.Tensor, stream: int, step: int,
           sampling: Sampling) -> torch.Tensor:
    """Next token per row of float32 `logits` (B, V)."""
    if sampling.greedy:
        return logits.argmax(-1)
    u = uniform(seeds, stream, step, logits.shape[-1])
    gumbel = -torch.log(-torch.log(u))
    return (filter_logits(logits, sampling) + gumbel).argmax(-1)
