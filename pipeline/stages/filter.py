"""filter: per-record checks (text lengths, score range). Duplicates are found across the whole
dataset when it is finalised (`pipeline.dedup`), since one record cannot see the others."""

from __future__ import annotations

from pipeline.config import FilterConfig
from pipeline.record import Reject, Sample
from pipeline.stage import Stage


class FilterStage(Stage):
    name = "filter"

    def __init__(self, cfg: FilterConfig) -> None:
        self.cfg = cfg

    def __call__(self, sample: Sample) -> Sample:
        c = self.cfg
        prompt = (sample.prompt or "").strip()
        if not prompt:
            raise Reject("empty_prompt")
        if len(prompt) > c.max_prompt_chars:
            raise Reject(f"prompt_too_long ({len(prompt)} > {c.max_prompt_chars} chars)")
        lengths = []
        for r in sample.regions:
            n = len(r.guide.strip())
            if n < c.min_guide_chars:
                raise Reject(f"guide_too_short (band {r.index}: {n} < {c.min_guide_chars} chars)")
            if n > c.max_guide_chars:
                raise Reject(f"guide_too_long (band {r.index}: {n} > {c.max_guide_chars} chars)")
            lengths.append(n)
        scores = [r.reflection.score for r in sample.regions if r.reflection is not None]
        lo, hi = c.score_range
        for r in sample.regions:
            if r.reflection is not None and not lo <= r.reflection.score <= hi:
                raise Reject(f"score_out_of_range (band {r.index}: {r.reflection.score} not in {lo}..{hi})")
            if r.reflection is not None and not r.reflection.revised_guide.strip():
                raise Reject(f"empty_revised_guide (band {r.index})")
        f = sample.filters
        if f.judge_score is not None and f.judge_score < c.min_judge_score:
            raise Reject(f"judge_score_too_low ({f.judge_score} < {c.min_judge_score})")
        f.prompt_chars = len(prompt)
        f.min_guide_chars = min(lengths) if lengths else None
        f.max_guide_chars = max(lengths) if lengths else None
        f.min_score = min(scores) if scores else None
        return sample
