"""The local engine: units processed in parallel by a process pool on this machine's cores."""

from __future__ import annotations

import multiprocessing as mp

from pipeline.plan import Unit, largest_first
from pipeline.progress import LIVE_COUNTERS, Bar
from pipeline.runner import UnitRunner

_runner: UnitRunner | None = None
_counters = None  # shared doubles: [records done, *LIVE_COUNTERS]


def _init(runner: UnitRunner, counters) -> None:
    global _runner, _counters
    _runner, _counters = runner, counters
    _runner.setup()


def _tick(n: int, live: dict[str, float] | None = None) -> None:
    with _counters.get_lock():
        _counters[0] += n
        for i, name in enumerate(LIVE_COUNTERS, 1):
            _counters[i] += (live or {}).get(name, 0.0)


def _run(unit: Unit) -> dict:
    return _runner.run(unit, tick=_tick)


def run_local(runner: UnitRunner, units: list[Unit], workers: int, progress: bool) -> list[dict]:
    bar = Bar(sum(len(u.items) for u in units), progress)
    try:
        if workers <= 1 or len(units) <= 1:
            runner.setup()
            return [runner.run(u, tick=bar.tick) for u in units]
        ctx = mp.get_context("spawn")
        counters = ctx.Array("d", 1 + len(LIVE_COUNTERS))
        with ctx.Pool(min(workers, len(units)), initializer=_init, initargs=(runner, counters)) as pool:
            order = largest_first(units)
            pending = [pool.apply_async(_run, (u,)) for u in order]
            while True:
                done = all(p.ready() for p in pending)
                values = counters[:]
                bar.show(values[0], dict(zip(LIVE_COUNTERS, values[1:], strict=True)))
                for p in pending:  # fail fast: a worker error stops the run with its message
                    if p.ready() and not p.successful():
                        p.get()
                if done:
                    break
                next(p for p in pending if not p.ready()).wait(0.2)
            return [p.get() for p in pending]
    finally:
        bar.close()
