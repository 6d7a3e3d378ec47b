"""The live progress line: records done, and the teacher's requests, tokens, cost, cache hits and
errors as they happen (summed over every worker)."""

from __future__ import annotations

import time

from tqdm import tqdm

from annotators.teacher.client import LIVE_COUNTERS

__all__ = ["LIVE_COUNTERS", "Bar", "Rate", "postfix"]


def _si(x: float) -> str:
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


class Rate:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def per_s(self, n: float) -> float:
        return n / max(time.monotonic() - self.t0, 1e-6)


def postfix(live: dict[str, float], rate: Rate) -> str:
    """e.g. 'req 41.2/s tok 183.0k $0.42 cache 120 retry 3 err 3' (empty when no teacher ran)."""
    if not any(live.values()):
        return ""
    return (f"req {rate.per_s(live['requests']):.1f}/s tok {_si(live['tokens'])} ${live['cost']:.2f} "
            f"cache {live['cache_hits']:.0f} retry {live['retries']:.0f} err {live['errors']:.0f}")


class Bar:
    """The engines' progress bar: samples done, rate, ETA and the teacher's live counters."""

    def __init__(self, total: int, progress: bool) -> None:
        self.bar = tqdm(total=total, unit="sample", desc="twig", disable=not progress, smoothing=0.1,
                        dynamic_ncols=True)
        self.live = dict.fromkeys(LIVE_COUNTERS, 0.0)
        self.rate = Rate()
        self.done = 0

    def show(self, done: float, live: dict[str, float]) -> None:
        """Set the totals (engines that poll shared counters)."""
        self.live = live
        text = postfix(live, self.rate)
        if text:
            self.bar.set_postfix_str(text, refresh=False)
        self.bar.update(int(done) - self.done)
        self.done = int(done)

    def tick(self, n: int, live: dict[str, float] | None = None) -> None:
        """Add to the totals (engines told of each finished record or unit)."""
        merged = dict(self.live)
        for k, v in (live or {}).items():
            if k in merged:
                merged[k] += v
        self.show(self.done + n, merged)

    def close(self) -> None:
        self.bar.close()
