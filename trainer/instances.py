"""A trajectory's 9 SFT task instances as token sequences, and the mixture that samples them.

The task list is the dataset's own (`sharding.tasks.expand`: think_k, reflect_k, generate_k; a band
its reflection rejected is no generation target). Each instance is the trajectory's interleaved
stream (`generator.sequence.TwigFormat.interleaved`, the generator's format) cut after the task's
target segment, with the loss on that segment alone: the guide for think_k (text head), the
reflection for reflect_k (text head), band k's image tokens for generate_k (image head).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from generator.sequence import (
    BandGrid,
    FormatError,
    SpecialIds,
    TwigFormat,
    render_record_reflection,
)
from schemas import TwigRecord
from sharding.tasks import TASKS, expand

TARGET_KIND = {"think": "guide", "reflect": "reflection", "generate": "band"}


@dataclass
class Instance:
    key: str
    task: str            # think | reflect | generate
    band: int            # 0-based
    ids: list[int]
    is_img: list[bool]
    target: list[bool]

    @property
    def name(self) -> str:
        return f"{self.task}_{self.band + 1}"

    def __len__(self) -> int:
        return len(self.ids)


class InstanceBuilder:
    """Builds instances with one tokenizer; one TwigFormat per distinct band layout."""

    def __init__(self, tokenizer, grid: tuple[int, int], detailed_reflections: bool = False):
        self.tokenizer = tokenizer
        self.rows, self.cols = grid
        self.detailed = detailed_reflections
        self.special = SpecialIds.from_tokenizer(tokenizer)
        self._formats: dict[tuple, TwigFormat] = {}

    def format_for(self, record: TwigRecord) -> TwigFormat:
        bounds = tuple(self._model_rows(record, tuple(r.rows)) for r in record.regions)
        if bounds not in self._formats:
            grid = BandGrid.from_rows(self.rows, self.cols, list(bounds))
            self._formats[bounds] = TwigFormat(self.tokenizer, grid, "interleaved")
        return self._formats[bounds]

    def _model_rows(self, record: TwigRecord, rows: tuple[int, int]) -> tuple[int, int]:
        """A band's rows on the model's grid (the record's grid may be a multiple of it)."""
        rec_rows = record.image.grid[0]
        if rec_rows == self.rows:
            return rows
        if any(r * self.rows % rec_rows for r in rows):
            raise FormatError(f"record {record.key}: band rows {list(rows)} on a {rec_rows}-row grid do "
                              f"not fall on whole rows of the model's {self.rows}-row grid")
        return rows[0] * self.rows // rec_rows, rows[1] * self.rows // rec_rows

    def build(self, record: TwigRecord, tokens: np.ndarray) -> list[Instance]:
        fmt = self.format_for(record)
        grid = fmt.grid
        flat = [int(t) for t in tokens]
        if len(flat) != grid.n_tokens:
            raise FormatError(f"record {record.key}: {len(flat)} image tokens, the model's grid holds "
                              f"{grid.n_tokens}")
        bands = [flat[slice(*grid.tokens(k))] for k in range(grid.k)]
        guides = [r.guide for r in record.regions]
        reflections = [render_record_reflection(r.reflection, self.detailed) if r.reflection else None
                       for r in record.regions]
        segments = fmt.interleaved(record.prompt, guides, bands, reflections)
        out = []
        for task in expand(record):
            kind, k = TARGET_KIND[task["task"]], task["band"]
            end = next(i for i, s in enumerate(segments) if s.kind == kind and s.band == k)
            ids: list[int] = []
            img: list[bool] = []
            tgt: list[bool] = []
            for i, seg in enumerate(segments[: end + 1]):
                ids += seg.ids
                img += [seg.is_image] * len(seg.ids)
                tgt += [i == end] * len(seg.ids)
            out.append(Instance(record.key, task["task"], k, ids, img, tgt))
        return out

    def uncond(self, inst: Instance) -> list[int]:
        """The instance with every text token but `<bos>`/`<boi>` padded: Janus's unconditional row,
        trained on a share of generate instances so classifier-free guidance keeps working."""
        keep = (self.special.bos, self.special.boi)
        pad = self.special.pad
        return [t if (im or t in keep) else pad for t, im in zip(inst.ids, inst.is_img, strict=True)]


def parse_mixture(text: str | dict | None) -> dict[str, float]:
    """`think=1,reflect=1,generate=1` (the default: each family an equal share) -> weights."""
    weights = {t: 1.0 for t in TASKS}
    if not text:
        return weights
    items = text.items() if isinstance(text, dict) else (p.split("=", 1) for p in str(text).split(","))
    for item in items:
        if len(item) != 2:
            raise ValueError(f"mixture {text!r}: write it as think=1,reflect=1,generate=1")
        name, value = str(item[0]).strip(), item[1]
        if name not in weights:
            raise ValueError(f"mixture names unknown task family {name!r}; families: {', '.join(TASKS)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"mixture weight for {name} is not a number: {value!r}") from None
        if weights[name] < 0:
            raise ValueError(f"mixture weight for {name} must be >= 0")
    if not any(weights.values()):
        raise ValueError("mixture weights are all zero")
    return weights


def epoch_order(instances: list[Instance], weights: dict[str, float], seed: int, epoch: int) -> list[int]:
    """One epoch: len(instances) draws, each family taking its weight's share of them (families
    absent from the data drop out), by a generator seeded from (seed, epoch) so a resumed run
    sees the same order."""
    counts = {t: sum(1 for i in instances if i.task == t) for t in TASKS}
    live = {t: w for t, w in weights.items() if counts[t] and w > 0}
    if not live:
        raise ValueError("no training instance belongs to a task family with a positive weight")
    total = sum(live.values())
    p = torch.tensor([live.get(i.task, 0.0) / total / counts[i.task] for i in instances], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.multinomial(p, len(instances), replacement=True, generator=gen).tolist()
