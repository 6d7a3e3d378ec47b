"""One KV cache holding 2B rows: B conditional rows, then their B unconditional twins for CFG.

Columns are appended in lockstep for all rows. A row that has nothing to add this step (its guide
already ended) gets a padding column its attention mask hides, so ragged text lengths cost nothing
in correctness. Positions follow each row's own count of visible tokens, as in a left-padded batch.
The cache is static (allocated once at `capacity` columns): rewinding to a checkpoint only moves
the write position back, and the columns after it are overwritten by what comes next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import StaticCache


@dataclass
class Checkpoint:
    length: int
    seen: torch.Tensor
    hidden: torch.Tensor


def embed(model, ids: torch.Tensor, is_img: torch.Tensor) -> torch.Tensor:
    """Input embeddings of a (N, T) block holding text ids where ~is_img and VQ codes where is_img."""
    zeros = torch.zeros_like(ids)
    text = model.get_input_embeddings()(torch.where(is_img, zeros, ids))
    if not bool(is_img.any()):
        return text
    image = model.prepare_embeddings_for_image_generation(torch.where(is_img, ids, zeros))
    return torch.where(is_img[..., None], image.to(text.dtype), text)


def decode_step(lm, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor,
                cache_position: torch.Tensor, cache) -> torch.Tensor:
    """One forward of the language model over new columns; the last column's hidden state."""
    out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
             past_key_values=cache, cache_position=cache_position, use_cache=True)
    return out.last_hidden_state[:, -1]


class KVStream:
    """The running 2B-row sequence: ids, masks, target log-probs and the static KV cache."""

    def __init__(self, model, batch: int, capacity: int, device: torch.device,
                 step_fn: Callable | None = None):
        self.model = model
        self.B = batch
        self.capacity = capacity
        self.device = device
        n = 2 * batch
        self.cache = StaticCache(config=model.config.text_config, max_cache_len=capacity)
        self.ids = torch.zeros(n, capacity, dtype=torch.long, device=device)
        self.is_img = torch.zeros(n, capacity, dtype=torch.bool, device=device)
        self.mask = torch.zeros(n, capacity, dtype=torch.long, device=device)
        self.target = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        self.logp = torch.zeros(batch, capacity, dtype=torch.float32, device=device)
        self.seen = torch.zeros(n, dtype=torch.long, device=device)
        self.length = 0
        self.hidden: torch.Tensor | None = None
        self._step = step_fn or decode_step   # a compiled decode_step (CUDA graphs) when asked

    # -- writing -------------------------------------------------------------------------------
    def prefill(self, cond: list[list[int]], uncond: list[list[int]], cond_img: list[list[bool]]) -> None:
        """Start over from position 0 with left-padded rows (cond then uncond)."""
        rows = cond + uncond
        imgs = cond_img + cond_img
        width = max(len(r) for r in rows)
        if width >= self.capacity:
            raise ValueError(f"a prefix of {width} tokens does not fit the cache of {self.capacity}")
        pad = 0
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
        img = torch.tensor([[False] * (width - len(r)) + m for r, m in zip(rows, imgs, strict=True)])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        self._seek(0)
        self.mask.zero_()
        self.target.zero_()
        self.logp.zero_()
        self.ids[:, :width] = ids.to(self.device)
        self.is_img[:, :width] = img.to(self.device)
        self.mask[:, :width] = mask.to(self.device)
        pos = (self.mask[:, :width].cumsum(-1) - 1).clamp(min=0)
        self.seen = self.mask[:, :width].sum(-1)
        self.hidden = self._forward(embed(self.model, self.ids[:, :width], self.is_img[:, :width]),
                                    pos, torch.arange(width, device=self.device))
        self.length = width

    def push(self, cond_tok: torch.Tensor, is_img: bool, live: torch.Tensor,
             uncond_tok: torch.Tensor | None = None, logp: torch.Tensor | None = None,
             target: bool = False) -> None:
        """Append one column. `live` (B,) says which rows really add their token this step."""
        if self.length >= self.capacity:
            raise RuntimeError(f"the sequence outgrew its cache ({self.capacity} columns)")
        t = self.length
        if uncond_tok is None:
            uncond_tok = cond_tok
        live2 = torch.cat([live, live]).long()
        col = torch.cat([cond_tok, uncond_tok])
        self.ids[:, t] = col
        self.is_img[:, t] = is_img
        self.mask[:, t] = live2
        if target:
            self.target[:, t] = live
        if logp is not None:
            self.logp[:, t] = torch.where(live, logp, torch.zeros_like(logp))
        pos = self.seen[:, None].clone()
        self.seen = self.seen + live2
        ids = col[:, None]
        emb = (self.model.prepare_embeddings_for_image_generation(ids) if is_img
               else self.model.get_input_embeddings()(ids))
        self.length = t + 1
        self.hidden = self._step(self.model.model.language_model, emb, self.mask, pos,
                                 torch.tensor([t], device=self.device), self.cache)

    def extend(self, cond: torch.Tensor, uncond: torch.Tensor) -> None:
        """Append T text columns every row attends to (e.g. a `Guide k/K:` opener) in one forward."""
        T = cond.shape[1]
        t = self.length
        if t + T > self.capacity:
            raise RuntimeError(f"the sequence outgrew its cache ({self.capacity} columns)")
        block = torch.cat([cond, uncond])
        self.ids[:, t:t + T] = block
        self.is_img[:, t:t + T] = False
        self.mask[:, t:t + T] = 1
        pos = self.seen[:, None] + torch.arange(T, device=self.device)[None]
        self.seen = self.seen + T
        self.length = t + T
        self.hidden = self._forward(self.model.get_input_embeddings()(block), pos,
                                    torch.arange(t, t + T, device=self.device))

    def _forward(self, embeds: torch.Tensor, position_ids: torch.Tensor,
                 cache_position: torch.Tensor) -> torch.Tensor:
        return decode_step(self.model.model.language_model, embeds, self.mask, position_ids,
                           cache_position, self.cache)

    # -- rewinding -----------------------------------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        assert self.hidden is not None
        return Checkpoint(self.length, self.seen.clone(), self.hidden.clone())

    def rewind(self, cp: Checkpoint) -> None:
        """Drop every column after the checkpoint (the cache's later entries get overwritten)."""
        self.mask[:, cp.length:] = 0
        self.target[:, cp.length:] = False
        self.logp[:, cp.length:] = 0
        self._seek(cp.length)
        self.length = cp.length
        self.seen = cp.seen.clone()
        self.hidden = cp.hidden.clone()

    def _seek(self, length: int) -> None:
        """Move the cache's write position (transformers' static layers keep their own counter,
        updated in place so compiled graphs keep its address)."""
        for layer in self.cache.layers:
            if getattr(layer, "is_initialized", False):
                layer.cumulative_length.fill_(length)

    # -- reading -------------------------------------------------------------------------------
    def cond(self) -> dict[str, torch.Tensor]:
        """The conditional rows as a teacher-forcing batch (ids, is_img, mask, target, logp)."""
        n, B = self.length, self.B
        return {"ids": self.ids[:B, :n].clone(), "is_img": self.is_img[:B, :n].clone(),
                "mask": self.mask[:B, :n].clone(), "target": self.target[:, :n].clone(),
                "logp": self.logp[:, :n].clone()}
