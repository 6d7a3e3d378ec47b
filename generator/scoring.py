"""Teacher-forced log-probabilities of a TwiG sequence, from both heads in one forward pass.

Text positions are scored by the text head (`lm_head`), image positions by the image head
(`generation_head`), both on the conditional sequence without CFG, as TwiG-GRPO and SFT need. The
sampler records the same quantity incrementally; the two agree to float rounding (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from generator.stream import embed


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded / holey batch: each row counts its own visible tokens."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def sequence_logps(model, ids: torch.Tensor, is_img: torch.Tensor, mask: torch.Tensor,
                   target: torch.Tensor) -> torch.Tensor:
    """(N, T) log-prob of ids[:, t] given ids[:, :t] where target[:, t], else 0. Differentiable."""
    hidden = model.model.language_model(inputs_embeds=embed(model, ids, is_img), attention_mask=mask,
                                        position_ids=positions(mask)).last_hidden_state
    prev = hidden[:, :-1]
    tgt = target[:, 1:] & mask[:, 1:].bool()
    tok = ids[:, 1:]
    img = is_img[:, 1:]
    out = torch.zeros(tok.shape, dtype=torch.float32, device=ids.device)
    sel = tgt & img
    if sel.any():
        lp = F.log_softmax(model.model.generation_head(prev[sel]).float(), -1)
        out = out.index_put((sel.nonzero(as_tuple=True)), lp.gather(-1, tok[sel][:, None]).squeeze(-1))
    sel = tgt & ~img
    if sel.any():
        lp = F.log_softmax(model.lm_head(prev[sel]).float(), -1)
        out = out.index_put((sel.nonzero(as_tuple=True)), lp.gather(-1, tok[sel][:, None]).squeeze(-1))
    return torch.cat([torch.zeros_like(out[:, :1]), out], 1)
