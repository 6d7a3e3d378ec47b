"""Right-padded batches of token sequences (ids, image flags, loss targets) as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    ids: torch.Tensor        # (N, T) long
    is_img: torch.Tensor     # (N, T) bool: scored by the image head
    mask: torch.Tensor       # (N, T) long: 1 on real tokens
    target: torch.Tensor     # (N, T) bool: positions the loss covers
    tasks: list[str]         # per row: think | reflect | generate (or "rollout")

    def to(self, device) -> Batch:
        return Batch(self.ids.to(device), self.is_img.to(device), self.mask.to(device),
                     self.target.to(device), self.tasks)

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())


def collate(rows: list[tuple[list[int], list[bool], list[bool]]], pad: int, tasks: list[str]) -> Batch:
    width = max(len(r[0]) for r in rows)
    n = len(rows)
    ids = torch.full((n, width), pad, dtype=torch.long)
    is_img = torch.zeros((n, width), dtype=torch.bool)
    mask = torch.zeros((n, width), dtype=torch.long)
    target = torch.zeros((n, width), dtype=torch.bool)
    for i, (x, img, tgt) in enumerate(rows):
        t = len(x)
        ids[i, :t] = torch.tensor(x, dtype=torch.long)
        is_img[i, :t] = torch.tensor(img, dtype=torch.bool)
        mask[i, :t] = 1
        target[i, :t] = torch.tensor(tgt, dtype=torch.bool)
    return Batch(ids, is_img, mask, target, tasks)
