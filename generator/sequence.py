"""The TwiG sequence format: how prompt, guides, band image tokens and reflections become tokens.

Shared by the generator (it samples in this layout) and the trainer (it teacher-forces it), so
the two can never drift apart.

Text pieces (plain text, tokenized by the model's own tokenizer; `<eos>` is its end-of-sentence
token, `<boi>`/`<eoi>` its begin/end-of-image tokens):

    prompt      <bos><|User|>: {prompt}\\n\\n<|Assistant|>:        (Janus-Pro's generation prompt)
    think k     \\nGuide {k}/{K}:  {guide}<eos>                    (opener forced, guide sampled)
    band k      <boi> {rows r0..r1 of image tokens}                 (tokens sampled with CFG)
    reflect k   <eoi>\\nReflection {k}/{K}:  {reflection}<eos>     (opener forced, text sampled)

Two layouts:

- `interleaved` (what we train): one stream, prompt, then think/band/reflect for k = 1..K. With
  K=1, no think and no reflect it is exactly Janus-Pro's `prompt<boi>` + 576 image tokens.
- `reprefix` (the official zero-shot code's way): before band k the guides 1..k are folded into
  the user text and the prefix `prompt+guides<boi>` + the image tokens of bands 1..k-1 is encoded
  afresh; guide k+1 and reflection k are written at the end of band k's stream.

A reflection is the paper's c_k = (r_k, tau'_k) on one line: `score 62; revised guide: ...`, or just
`score 95` for a band it keeps (the guide stands, nothing to revise). The
parser also reads per-criterion scores and a critique when a model writes them (`color accuracy
90, ...; critique: ...`), and `render_reflection(..., detailed=True)` writes that longer form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.twig_v1 import CRITERIA, Reflection

Layout = Literal["interleaved", "reprefix"]
LAYOUTS: tuple[str, ...] = ("interleaved", "reprefix")

USER_TEMPLATE = "<|User|>: {prompt}\n\n<|Assistant|>:"
GUIDE_OPEN = "\nGuide {k}/{K}:"
REFLECT_OPEN = "\nReflection {k}/{K}:"
REPREFIX_GUIDE = "\nRegion {k}/{K}: {guide}"
CRITERIA_WORDS = {name: name.replace("_", " ") for name in CRITERIA}


class FormatError(ValueError):
    """The tokenizer or band layout cannot express the TwiG format; the message says why."""


@dataclass(frozen=True)
class BandGrid:
    """The token grid (rows x cols, raster order) and the K bands as half-open row ranges."""

    rows: int
    cols: int
    bounds: tuple[tuple[int, int], ...]

    @classmethod
    def uniform(cls, rows: int, cols: int, k: int) -> BandGrid:
        if not 1 <= k <= rows:
            raise FormatError(f"K={k} bands do not fit a grid of {rows} token rows")
        edges = [round(i * rows / k) for i in range(k + 1)]
        return cls(rows, cols, tuple(zip(edges[:-1], edges[1:], strict=True)))

    @classmethod
    def from_rows(cls, rows: int, cols: int, bounds: list[list[int]] | list[tuple[int, int]]) -> BandGrid:
        grid = cls(rows, cols, tuple((int(a), int(b)) for a, b in bounds))
        grid.check()
        return grid

    def check(self) -> None:
        if not self.bounds or self.bounds[0][0] != 0 or self.bounds[-1][1] != self.rows:
            raise FormatError(f"bands {list(self.bounds)} must start at row 0 and end at row {self.rows}")
        for (_, a1), (b0, _) in zip(self.bounds, self.bounds[1:], strict=False):
            if a1 != b0:
                raise FormatError(f"bands {list(self.bounds)} must be contiguous")
        if any(r1 <= r0 for r0, r1 in self.bounds):
            raise FormatError(f"bands {list(self.bounds)} must each hold at least one row")

    @property
    def k(self) -> int:
        return len(self.bounds)

    @property
    def n_tokens(self) -> int:
        return self.rows * self.cols

    def tokens(self, k: int) -> tuple[int, int]:
        """Half-open range of band k's image tokens in raster order."""
        r0, r1 = self.bounds[k]
        return r0 * self.cols, r1 * self.cols

    def size(self, k: int) -> int:
        a, b = self.tokens(k)
        return b - a


@dataclass(frozen=True)
class SpecialIds:
    bos: int
    eos: int
    pad: int
    boi: int
    eoi: int

    @classmethod
    def from_tokenizer(cls, tok: Any) -> SpecialIds:
        def tid(name: str, attr: str) -> int:
            token = getattr(tok, attr, None)
            value = tok.convert_tokens_to_ids(token) if token is not None else None
            if value is None or value == getattr(tok, "unk_token_id", None):
                raise FormatError(f"the tokenizer has no {name} token ({attr}); is this a Janus tokenizer?")
            return int(value)

        return cls(bos=tid("begin-of-sentence", "bos_token"), eos=tid("end-of-sentence", "eos_token"),
                   pad=tid("padding", "pad_token"), boi=tid("begin-of-image", "boi_token"),
                   eoi=tid("end-of-image", "eoi_token"))


@dataclass
class ParsedReflection:
    """What a reflection says. `score` is None when the text holds no score."""

    text: str
    score: int | None = None
    criteria: dict[str, int] = field(default_factory=dict)
    critique: str = ""
    revised_guide: str = ""

    @property
    def parsed(self) -> bool:
        return self.score is not None


_SCORE = re.compile(r"\bscore\b\D{0,4}?(\d{1,3})", re.IGNORECASE)
_CRIT = re.compile(r"(" + "|".join(re.escape(w) for w in CRITERIA_WORDS.values()) + r")\D{0,4}?(\d{1,3})",
                   re.IGNORECASE)
_CRITIQUE = re.compile(r"critique\s*:\s*(.*?)\s*(?:;\s*revised guide\s*:|$)", re.IGNORECASE | re.DOTALL)
_REVISED = re.compile(r"revised guide\s*:\s*(.*)$", re.IGNORECASE | re.DOTALL)


def render_reflection(score: int, revised_guide: str, criteria: dict[str, int] | None = None,
                      critique: str | None = None) -> str:
    """The reflection text; criteria and critique are written only when given."""
    parts = [f" score {int(score)}"]
    if criteria:
        parts.append(", ".join(f"{CRITERIA_WORDS[name]} {int(criteria[name])}" for name in CRITERIA))
    if critique:
        parts.append(f"critique: {_one_line(critique)}")
    parts.append(f"revised guide: {_one_line(revised_guide)}")
    return "; ".join(parts)


def render_record_reflection(reflection: Reflection, detailed: bool = False) -> str:
    """A `twig/v1` record's reflection as the model should write it. A band the reflection keeps
    needs no revised guide (TwiG-50K keeps its caption), so it is just ` score 95`: short
    reflections are most of them, and every token written costs a step for the whole batch."""
    if detailed:
        return render_reflection(reflection.score, reflection.revised_guide,
                                 reflection.criteria.model_dump(), reflection.critique)
    if reflection.accepted:
        return f" score {int(reflection.score)}"
    return render_reflection(reflection.score, reflection.revised_guide)


def parse_reflection(text: str) -> ParsedReflection:
    """Read a reflection back; tolerant of spacing and case, strict about the 0..100 range."""
    out = ParsedReflection(text=text)
    m = _SCORE.search(text)
    if m and int(m.group(1)) <= 100:
        out.score = int(m.group(1))
    for name_words, value in _CRIT.findall(text):
        name = name_words.lower().replace(" ", "_")
        if int(value) <= 100 and name not in out.criteria:
            out.criteria[name] = int(value)
    if m := _CRITIQUE.search(text):
        out.critique = m.group(1).strip()
    if m := _REVISED.search(text):
        out.revised_guide = m.group(1).strip()
    return out


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Segment:
    """A run of tokens of one kind. `target` marks what a model is trained to write."""

    kind: Literal["prompt", "open", "guide", "boi", "band", "eoi", "reflection"]
    ids: list[int]
    band: int | None = None

    @property
    def is_image(self) -> bool:
        return self.kind == "band"

    @property
    def target(self) -> bool:
        return self.kind in ("guide", "band", "reflection")


class TwigFormat:
    """Turns TwiG pieces into token ids with one tokenizer and one band grid."""

    def __init__(self, tokenizer: Any, grid: BandGrid, layout: str = "interleaved"):
        if layout not in LAYOUTS:
            raise FormatError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        grid.check()
        self.tokenizer = tokenizer
        self.grid = grid
        self.layout = layout
        self.special = SpecialIds.from_tokenizer(tokenizer)
        self._cache: dict[str, list[int]] = {}

    # -- text pieces ------------------------------------------------------------------------
    def text_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _cached(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self.text_ids(text)
        return self._cache[text]

    def prompt_ids(self, prompt: str, guides: list[str] | tuple[str, ...] = ()) -> list[int]:
        """`<bos>` + the user turn. In the reprefix layout the guides so far join the user text."""
        user = prompt.strip()
        for k, guide in enumerate(guides):
            user += REPREFIX_GUIDE.format(k=k + 1, K=self.grid.k, guide=_one_line(guide))
        return [self.special.bos, *self.text_ids(USER_TEMPLATE.format(prompt=user))]

    def guide_open(self, k: int) -> list[int]:
        return self._cached(GUIDE_OPEN.format(k=k + 1, K=self.grid.k))

    def reflect_open(self, k: int) -> list[int]:
        return self._cached(REFLECT_OPEN.format(k=k + 1, K=self.grid.k))

    def guide_ids(self, guide: str) -> list[int]:
        """A written guide as the model writes it: a leading space, the text, `<eos>`."""
        return [*self.text_ids(" " + _one_line(guide)), self.special.eos]

    def reflection_ids(self, text: str) -> list[int]:
        return [*self.text_ids(text if text.startswith(" ") else " " + text), self.special.eos]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def uncond(self, ids: list[int]) -> list[int]:
        """Janus's unconditional row for CFG: keep `<bos>` and `<boi>`, pad every other text token."""
        keep = (self.special.bos, self.special.boi)
        return [t if t in keep else self.special.pad for t in ids]

    # -- whole trajectories (what the trainer teacher-forces) ---------------------------------
    def interleaved(self, prompt: str, guides: list[str] | None, bands: list[list[int]],
                    reflections: list[str | None] | None = None) -> list[Segment]:
        """The interleaved stream of a finished trajectory: guides/reflections may be None (off),
        and a band whose reflection is None has none."""
        K = self.grid.k
        if len(bands) != K:
            raise FormatError(f"expected {K} bands of image tokens, got {len(bands)}")
        for k, band in enumerate(bands):
            if len(band) != self.grid.size(k):
                raise FormatError(f"band {k + 1} holds {len(band)} tokens, the grid says {self.grid.size(k)}")
        segs = [Segment("prompt", self.prompt_ids(prompt))]
        for k in range(K):
            if guides is not None:
                segs += [Segment("open", self.guide_open(k), k), Segment("guide", self.guide_ids(guides[k]), k)]
            segs += [Segment("boi", [self.special.boi], k), Segment("band", list(bands[k]), k)]
            if reflections is not None and reflections[k] is not None:
                segs += [Segment("eoi", [self.special.eoi], k), Segment("open", self.reflect_open(k), k),
                         Segment("reflection", self.reflection_ids(reflections[k]), k)]
        return segs


def flatten(segments: list[Segment]) -> tuple[list[int], list[bool], list[bool]]:
    """ids, is_image and is_target per position of a segment list."""
    ids: list[int] = []
    img: list[bool] = []
    tgt: list[bool] = []
    for seg in segments:
        ids += seg.ids
        img += [seg.is_image] * len(seg.ids)
        tgt += [seg.target] * len(seg.ids)
    return ids, img, tgt
