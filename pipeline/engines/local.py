"""The local engine: units processed in parallel by a process pool on this machine's cores."""

from __future__ import annotations

import multiprocessing as mp

from tqdm import tqdm

from pipeline.plan import Unit
from pipeline.runner import UnitRunner

_runner: UnitRunner | None = None
_counter = None


def _init(runner: UnitRunner, counter) -> None:
    global _runner, _counter
    _runner, _counter = runner, counter
    _runner.setup()


def _tick(n: int) -> None:
    with _counter.get_lock():
        _counter.value += n


def _run(unit: Unit) -> dict:
    return _runner.run(unit, tick=_tick)


def run_local(runner: UnitRunner, units: list[Unit], workers: int, progress: bool) -> list[dict]:
    total = sum(len(u.items) for u in units)
    bar = tqdm(total=total, unit="sample", desc="twig", disable=not progress, smoothing=0.1,
               dynamic_ncols=True)
    try:
        if workers <= 1 or len(units) <= 1:
            runner.setup()
            return [runner.run(u, tick=bar.update) for u in units]
        ctx = mp.get_context("spawn")
        counter = ctx.Value("q", 0)
        with ctx.Pool(min(workers, len(units)), initializer=_init, initargs=(runner, counter)) as pool:
            order = sorted(units, key=lambda u: -len(u.items))  # largest first: workers end together
            pending = [pool.apply_async(_run, (u,)) for u in order]
            seen = 0
            while True:
                done = all(p.ready() for p in pending)
                value = counter.value
                bar.update(value - seen)
                seen = value
                for p in pending:  # fail fast: a worker error stops the run with its message
                    if p.ready() and not p.successful():
                        p.get()
                if done:
                    break
                next(p for p in pending if not p.ready()).wait(0.2)
            return [p.get() for p in pending]
    finally:
        bar.close()
