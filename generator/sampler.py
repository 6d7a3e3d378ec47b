"""Think-while-generating sampling over `JanusForConditionalGeneration`, batched, with reflection.

For each band k = 1..K, every prompt of the batch, in lockstep:
  think    write guide k with the text head (or take the guide given with the prompt),
  draw     sample band k's image tokens with the image head under classifier-free guidance,
  reflect  write a reflection; if its score is <= theta, band k is cut from the cache and drawn
           once more with the reflection's revised guide (then reflected on again, not redrawn).
Rows that keep their band while others redraw replay their own tokens, so every prompt's result is
the same as if it had been sampled alone with its seed (see `choice.py` for the seeds).

The two layouts of `sequence.py` differ only in where a band's context comes from: `interleaved`
keeps one stream; `reprefix` re-encodes `prompt+guides<boi>` + the image so far before each band.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from generator.choice import Sampling, choose
from generator.sequence import BandGrid, ParsedReflection, TwigFormat, parse_reflection
from generator.stream import KVStream

GUIDE, BAND, REFLECT = 1, 2, 3


@dataclass(frozen=True)
class TwigSettings:
    """Everything that decides what the sampler writes (recorded in every trace)."""

    layout: str = "interleaved"
    bands: int = 3
    band_rows: tuple[tuple[int, int], ...] | None = None   # explicit [r0, r1) bands; overrides `bands`
    think: bool = True
    reflect: bool = True
    theta: int = 90
    cfg: float = 5.0
    guide_tokens: int = 40
    reflect_tokens: int = 56
    image: Sampling = Sampling(temperature=1.0)
    text: Sampling = Sampling(temperature=0.7, top_p=0.95)
    record_logps: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.theta <= 100:
            raise ValueError(f"theta must be in 0..100, got {self.theta}")
        if self.guide_tokens < 1 or self.reflect_tokens < 1:
            raise ValueError("guide_tokens and reflect_tokens must be >= 1")
        if self.cfg < 0:
            raise ValueError(f"cfg must be >= 0, got {self.cfg}")

    def grid(self, rows: int, cols: int) -> BandGrid:
        if self.band_rows is not None:
            return BandGrid.from_rows(rows, cols, list(self.band_rows))
        return BandGrid.uniform(rows, cols, self.bands)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["band_rows"] = [list(b) for b in self.band_rows] if self.band_rows else None
        return out


@dataclass
class Request:
    prompt: str
    seed: int = 0
    guides: list[str] | None = None      # given guides are teacher-forced instead of written
    reflections: list[str | None] | None = None   # given first reflections, likewise (per band)


@dataclass
class BandResult:
    index: int
    rows: tuple[int, int]
    guide: str
    guide_truncated: bool = False
    reflection: dict[str, Any] | None = None
    regenerated: bool = False
    first_attempt: dict[str, Any] | None = None   # guide/reflection of the discarded draw


@dataclass
class Trajectory:
    prompt: str
    seed: int
    image_tokens: list[int]
    bands: list[BandResult]
    sequence: dict[str, torch.Tensor] | None = None   # interleaved only: the final stream (cond row)
    first_draws: dict[int, list[int]] = field(default_factory=dict)   # band -> discarded tokens


@dataclass
class _Row:
    guides: list[list[int]] = field(default_factory=list)        # token ids incl. <eos>
    truncated: list[bool] = field(default_factory=list)
    bands: list[torch.Tensor] = field(default_factory=list)
    reflections: list[list[int]] = field(default_factory=list)
    parsed: list[ParsedReflection | None] = field(default_factory=list)


class TwigSampler:
    """Samples TwiG trajectories for batches of prompts with one model."""

    def __init__(self, model, tokenizer, settings: TwigSettings | None = None, grid: tuple[int, int] | None = None,
                 compile: bool = False):
        self.model = model
        self.settings = settings or TwigSettings()
        if grid is None:
            side = int(round(model.config.vision_config.num_image_tokens ** 0.5))
            grid = (side, side)
        self.format = TwigFormat(tokenizer, self.settings.grid(*grid), self.settings.layout)
        self.grid = self.format.grid
        self.device = next(model.parameters()).device
        self.step_fn = _compiled_step(self.device) if compile else None
        self._streams: dict[tuple[int, int], KVStream] = {}
        self.timings: dict[str, float] = {}

    # -- public ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, requests: list[Request]) -> list[Trajectory]:
        if not requests:
            return []
        s, fmt, K = self.settings, self.format, self.grid.k
        for r in requests:
            for name, given_k in (("guides", r.guides), ("reflections", r.reflections)):
                if given_k is not None and len(given_k) != K:
                    raise ValueError(f"prompt {r.prompt[:40]!r} comes with {len(given_k)} {name}; "
                                     f"the sampler draws {K} bands")
        self.timings = {"think_s": 0.0, "draw_s": 0.0, "reflect_s": 0.0, "redraw_s": 0.0}
        t_start = self._now()
        B = len(requests)
        self._seeds = torch.tensor([r.seed for r in requests], dtype=torch.int64, device=self.device)
        rows = [_Row() for _ in requests]
        given = [[fmt.guide_ids(g) for g in r.guides] if r.guides is not None else None for r in requests]
        stream = self._stream(B, self._capacity(requests, given))
        if s.layout == "interleaved" or s.think:
            self._prefill_prompt(stream, requests)
        first_draws: list[dict[int, list[int]]] = [{} for _ in requests]
        firsts: list[dict[int, dict]] = [{} for _ in requests]
        for k in range(K):
            cp = stream.checkpoint() if s.layout == "interleaved" else None
            if s.think:
                t0 = self._now()
                forced = [g[k] if g is not None else None for g in given]
                ids, trunc = self._text(stream, fmt.guide_open(k), forced, s.guide_tokens, (k, GUIDE, 0))
                for row, i, tr in zip(rows, ids, trunc, strict=True):
                    row.guides.append(i)
                    row.truncated.append(tr)
                self.timings["think_s"] += self._now() - t0
            t0 = self._now()
            if s.layout == "reprefix":
                self._prefill_band(stream, requests, rows, k)
            else:
                self._push_all(stream, [fmt.special.boi])
            band = self._image(stream, self.grid.size(k), None, (k, BAND, 0))
            for i, row in enumerate(rows):
                row.bands.append(band[i])
            self.timings["draw_s"] += self._now() - t0
            if not s.reflect:
                continue
            t0 = self._now()
            forced = [fmt.reflection_ids(r.reflections[k]) if r.reflections and r.reflections[k] is not None
                      else None for r in requests]
            refl = self._reflect(stream, rows, k, forced, attempt=0)
            self.timings["reflect_s"] += self._now() - t0
            redo = [p is not None and p.score is not None and p.score <= s.theta
                    for p in (row.parsed[k] for row in rows)]
            if not any(redo):
                continue
            t0 = self._now()
            for i, row in enumerate(rows):
                if redo[i]:
                    firsts[i][k] = {"guide": fmt.decode(row.guides[k]) if s.think else None,
                                    "reflection": asdict(row.parsed[k])}
                    first_draws[i][k] = row.bands[k].tolist()
                    revised = row.parsed[k].revised_guide
                    if s.think and revised:
                        row.guides[k] = fmt.guide_ids(revised)[:-1][: s.guide_tokens] + [fmt.special.eos]
            self._redraw(stream, cp, requests, rows, k, redo, refl)
            self.timings["redraw_s"] += self._now() - t0
        t0 = self._now()
        out = self._finish(stream, requests, rows, firsts, first_draws)
        self.timings["collect_s"] = self._now() - t0
        self.timings["total_s"] = self._now() - t_start
        return out

    def decode_images(self, trajectories: list[Trajectory]) -> torch.Tensor:
        """(B, H, W, 3) uint8 pixels from the VQ decoder; a prompt's pixels do not depend on its batch."""
        t0 = self._now()
        images = []
        with torch.no_grad():
            for t in trajectories:   # one at a time: batched convolutions round differently
                tokens = torch.tensor([t.image_tokens], dtype=torch.long, device=self.device)
                images.append(self.model.decode_image_tokens(tokens).float())
        out = ((torch.cat(images).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        self.timings["decode_s"] = self._now() - t0
        return out

    # -- phases ------------------------------------------------------------------------------
    def _redraw(self, stream, cp, requests, rows, k, redo, refl) -> None:
        """Cut band k (and what followed) and draw it again where `redo`; others replay their tokens."""
        s, fmt = self.settings, self.format
        keep = torch.tensor([not r for r in redo], device=self.device)
        old = torch.stack([row.bands[k] for row in rows])
        if s.layout == "interleaved":
            stream.rewind(cp)
            if s.think:
                self._text(stream, fmt.guide_open(k), [row.guides[k] for row in rows], s.guide_tokens + 1,
                           (k, GUIDE, 1))
            self._push_all(stream, [fmt.special.boi])
        else:
            self._prefill_band(stream, requests, rows, k)
        band = self._image(stream, self.grid.size(k), (old, keep), (k, BAND, 1))
        for i, row in enumerate(rows):
            row.bands[k] = band[i]
        self._reflect(stream, rows, k, [None if redo[i] else refl[i] for i in range(len(rows))], attempt=1)

    def _reflect(self, stream, rows, k, forced, attempt: int) -> list[list[int]]:
        fmt = self.format
        ids, _ = self._text(stream, [fmt.special.eoi, *fmt.reflect_open(k)], forced,
                            self.settings.reflect_tokens, (k, REFLECT, attempt))
        for row, i in zip(rows, ids, strict=True):
            parsed = parse_reflection(fmt.decode(i))
            if len(row.reflections) > k:
                row.reflections[k], row.parsed[k] = i, parsed
            else:
                row.reflections.append(i)
                row.parsed.append(parsed)
        return ids

    def _prefill_prompt(self, stream: KVStream, requests: list[Request]) -> None:
        cond = [self.format.prompt_ids(r.prompt) for r in requests]
        stream.prefill(cond, [self.format.uncond(c) for c in cond], [[False] * len(c) for c in cond])

    def _prefill_band(self, stream: KVStream, requests, rows, k: int) -> None:
        """reprefix: `prompt + guides 1..k <boi>` and the image tokens of bands before k, encoded afresh."""
        fmt = self.format
        cond, img = [], []
        for r, row in zip(requests, rows, strict=True):
            guides = [fmt.decode(g) for g in row.guides[: k + 1]] if self.settings.think else []
            text = [*fmt.prompt_ids(r.prompt, guides), fmt.special.boi]
            image = [t for band in row.bands[:k] for t in band.tolist()]
            cond.append(text + image)
            img.append([False] * len(text) + [True] * len(image))
        uncond = [fmt.uncond(c[: len(c) - sum(m)]) + c[len(c) - sum(m):] for c, m in zip(cond, img, strict=True)]
        stream.prefill(cond, uncond, img)

    def _push_all(self, stream: KVStream, ids: list[int]) -> None:
        """Text every row gets (openers, `<boi>`); unconditional rows see it padded, as Janus does."""
        cond = torch.tensor([ids] * stream.B, dtype=torch.long, device=self.device)
        uncond = torch.tensor([self.format.uncond(ids)] * stream.B, dtype=torch.long, device=self.device)
        stream.extend(cond, uncond)

    def _text(self, stream: KVStream, opener: list[int], forced: list[list[int] | None], max_new: int,
              key: tuple[int, int, int]) -> tuple[list[list[int]], list[bool]]:
        """Write one text segment per row (sampled, or `forced` where given) until `<eos>`."""
        B, dev, fmt = stream.B, self.device, self.format
        eos, pad = fmt.special.eos, fmt.special.pad
        self._push_all(stream, opener)
        is_forced = torch.tensor([f is not None for f in forced], device=dev)
        width = max([len(f) for f in forced if f is not None], default=0)
        ftoks = torch.full((B, max(width, 1)), pad, dtype=torch.long, device=dev)
        flen = torch.zeros(B, dtype=torch.long, device=dev)
        for i, f in enumerate(forced):
            if f is not None:
                ftoks[i, : len(f)] = torch.tensor(f, dtype=torch.long)
                flen[i] = len(f)
        any_sampled = not bool(is_forced.all())
        live = torch.ones(B, dtype=torch.bool, device=dev)
        stream_id = key[0] * 100 + key[1] * 10 + key[2]
        cols, lives = [], []
        cut = torch.zeros(B, dtype=torch.bool, device=dev)
        t = 0
        pad_col = torch.full((B,), pad, dtype=torch.long, device=dev)
        while True:
            logits = self.model.lm_head(stream.hidden[:B]).float()
            tok = choose(logits, self._seeds, stream_id, t, self.settings.text) if any_sampled else pad_col
            if t < width:
                tok = torch.where(is_forced, ftoks[:, t], tok)
            if any_sampled and t == max_new - 1:
                cut = live & ~is_forced & (tok != eos)
                tok = torch.where(cut, torch.full_like(tok, eos), tok)
            tok = torch.where(live, tok, pad_col)
            logp = F.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(-1) if self.settings.record_logps else None
            stream.push(tok, False, live, pad_col, logp=logp, target=True)
            cols.append(tok)
            lives.append(live)
            ended = torch.where(is_forced, flen <= t + 1, tok == eos)
            live = live & ~ended
            t += 1
            if not bool(live.any()):
                break
        toks = torch.stack(cols, 1).cpu()
        alive = torch.stack(lives, 1).cpu()
        ids = [toks[i][alive[i]].tolist() for i in range(B)]
        return ids, cut.cpu().tolist()

    def _image(self, stream: KVStream, n: int, forced: tuple[torch.Tensor, torch.Tensor] | None,
               key: tuple[int, int, int]) -> torch.Tensor:
        """Draw n image tokens per row with CFG; rows marked in `forced` replay their given tokens."""
        B, s = stream.B, self.settings
        live = torch.ones(B, dtype=torch.bool, device=self.device)
        all_forced = forced is not None and bool(forced[1].all())
        stream_id = key[0] * 100 + key[1] * 10 + key[2]
        out = torch.empty(B, n, dtype=torch.long, device=self.device)
        head = self.model.model.generation_head
        for t in range(n):
            logits = head(stream.hidden).float() if (not all_forced or s.record_logps) else None
            if all_forced:
                tok = forced[0][:, t]
            else:
                cond, uncond = logits[:B], logits[B:]
                guided = uncond + s.cfg * (cond - uncond)
                tok = choose(guided, self._seeds, stream_id, t, s.image)
                if forced is not None:
                    tok = torch.where(forced[1], forced[0][:, t], tok)
            logp = (F.log_softmax(logits[:B], -1).gather(-1, tok[:, None]).squeeze(-1)
                    if s.record_logps else None)
            stream.push(tok, True, live, logp=logp, target=True)
            out[:, t] = tok
        return out.cpu()

    # -- bookkeeping -------------------------------------------------------------------------
    def _finish(self, stream, requests, rows, firsts, first_draws) -> list[Trajectory]:
        s, fmt = self.settings, self.format
        seq = stream.cond() if s.layout == "interleaved" else None
        out = []
        for i, (r, row) in enumerate(zip(requests, rows, strict=True)):
            bands = []
            for k in range(self.grid.k):
                parsed = row.parsed[k] if s.reflect else None
                bands.append(BandResult(
                    index=k, rows=self.grid.bounds[k],
                    guide=fmt.decode(row.guides[k]) if s.think else "",
                    guide_truncated=bool(row.truncated[k]) if s.think else False,
                    reflection=asdict(parsed) | {"parsed": parsed.parsed} if parsed is not None else None,
                    regenerated=k in firsts[i], first_attempt=firsts[i].get(k)))
            sequence = None
            if seq is not None:
                sequence = {name: v[i] for name, v in seq.items()}
            tokens = torch.cat(row.bands).tolist()
            out.append(Trajectory(r.prompt, r.seed, tokens, bands, sequence, first_draws[i]))
        return out

    def _capacity(self, requests: list[Request], given) -> int:
        s, fmt, K = self.settings, self.format, self.grid.k
        prompt = max(len(fmt.prompt_ids(r.prompt)) for r in requests)
        longest_given = max([len(g) for gs in given if gs for g in gs], default=0)
        guide = max(s.guide_tokens + 1, longest_given) + max(len(fmt.guide_open(k)) for k in range(K))
        longest_refl = max([len(fmt.reflection_ids(x)) for r in requests if r.reflections
                            for x in r.reflections if x is not None], default=0)
        reflect = 1 + max(len(fmt.reflect_open(k)) for k in range(K)) + max(s.reflect_tokens + 1, longest_refl)
        per_band = (guide if s.think else 0) + (reflect if s.reflect else 0)
        if s.layout == "interleaved":
            return prompt + K * (per_band + 1) + self.grid.n_tokens + 8
        folded = K * (guide + 16) if s.think else 0
        return prompt + folded + 1 + self.grid.n_tokens + per_band + 8

    def _stream(self, batch: int, capacity: int) -> KVStream:
        """A stream of at least `capacity` columns, reused across batches of the same shape (so a
        compiled step is captured once)."""
        capacity = -(-capacity // 64) * 64
        key = (batch, capacity)
        if key not in self._streams:
            self._streams = {key: KVStream(self.model, batch, capacity, self.device, self.step_fn)}
        return self._streams[key]

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _compiled_step(device: torch.device):
    """`decode_step` under torch.compile: CUDA graphs on a GPU (mode reduce-overhead), Inductor
    kernels on CPU. Shapes are static (one column, a cache of fixed size), so it compiles once."""
    from generator.stream import decode_step

    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(decode_step, mode=mode, dynamic=False)
