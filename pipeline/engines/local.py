"""The local engine: units processed in parallel by a process pool on this machine's cores.

Nothing here can hang the run. A worker that dies (killed, out of memory) stops the run with the
units it was computing. A unit still running after `run.unit_timeout_s` stops the run with the
stage it is stuck in: the unit's own event loop gives up first (`UnitRunner.compute`), and a
watchdog here kills the workers a little later if a stage blocks that loop (a CPU-bound stage, a
read that never returns). Workers exit when the driver dies, so a killed run leaves no orphan
still sending teacher requests or writing into the output folder. Finished units are kept.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from pipeline.engines import EngineError, grace_s
from pipeline.plan import Unit, largest_first
from pipeline.progress import LIVE_COUNTERS, Bar
from pipeline.runner import UnitRunner, UnitTimeout, Where, describe_where

POLL_S = 0.2

_runner: UnitRunner | None = None
_counters = None  # shared doubles: [records done, *LIVE_COUNTERS]
_where = None  # shared ints: per unit, how many of its records are in each step
_started = None  # shared doubles: per unit, 0 before it starts, its start time, -1 when done


def _orphan_guard(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:  # the driver died (killed): stop paying for its work
            os._exit(1)


def _init(runner: UnitRunner, counters, where, started, parent: int) -> None:
    global _runner, _counters, _where, _started
    _runner, _counters, _where, _started = runner, counters, where, started
    threading.Thread(target=_orphan_guard, args=(parent,), name="twig-orphan-guard",
                     daemon=True).start()


def _tick(n: int, live: dict[str, float] | None = None) -> None:
    with _counters.get_lock():
        _counters[0] += n
        for i, name in enumerate(LIVE_COUNTERS, 1):
            _counters[i] += (live or {}).get(name, 0.0)


def _run(index: int, unit: Unit) -> dict:
    names = _runner.where.names
    n = len(names)
    _runner.where = Where(names, memoryview(_where).cast("B").cast("i")[index * n:(index + 1) * n])
    _started[index] = time.monotonic()
    try:
        return _runner.run(unit, tick=_tick)
    finally:
        _started[index] = -1.0


def run_local(runner: UnitRunner, units: list[Unit], workers: int, progress: bool) -> list[dict]:
    bar = Bar(sum(len(u.items) for u in units), progress)
    try:
        if workers <= 1 or len(units) <= 1:
            runner.setup()
            return [_in_process(runner, u, bar) for u in units]
        return _in_pool(runner, units, min(workers, len(units)), bar)
    finally:
        bar.close()


def _in_process(runner: UnitRunner, unit: Unit, bar: Bar) -> dict:
    """One unit in this process; past its limit (and grace), SIGALRM interrupts a blocked stage."""
    limit = runner.config.run.unit_timeout_s
    if (not limit or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()):
        return runner.run(unit, tick=bar.tick)

    def fire(signum, frame) -> None:
        raise UnitTimeout(unit.id, limit, runner.where.describe())

    t0 = time.monotonic()
    previous = signal.signal(signal.SIGALRM, fire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, limit + grace_s(limit))
    try:
        return runner.run(unit, tick=bar.tick)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:  # someone else's alarm (a test timeout) was pending: put it back
            signal.setitimer(signal.ITIMER_REAL, max(0.001, outer - (time.monotonic() - t0)))


def _in_pool(runner: UnitRunner, units: list[Unit], n: int, bar: Bar) -> list[dict]:
    limit = runner.config.run.unit_timeout_s
    names = runner.where.names
    ctx = mp.get_context("spawn")
    counters = ctx.Array("d", 1 + len(LIVE_COUNTERS))
    where = ctx.RawArray("i", len(units) * len(names))
    started = ctx.RawArray("d", len(units))
    index = {u.id: i for i, u in enumerate(units)}
    pool = ProcessPoolExecutor(n, mp_context=ctx, initializer=_init,
                               initargs=(runner, counters, where, started, os.getpid()))
    ok = False
    procs: list = []
    try:
        futures: dict[Future, Unit] = {pool.submit(_run, index[u.id], u): u
                                       for u in largest_first(units)}
        procs = list((getattr(pool, "_processes", None) or {}).values())
        while True:
            done, pending = wait(futures, timeout=POLL_S, return_when=FIRST_EXCEPTION)
            values = counters[:]
            bar.show(values[0], dict(zip(LIVE_COUNTERS, values[1:], strict=True)))
            for f in done:  # fail fast: a worker's error stops the run with its message
                error = f.exception()
                if isinstance(error, BrokenProcessPool):
                    busy = [u.id for u in units if started[index[u.id]] > 0]
                    raise EngineError(f"a worker process died{_how(procs)} while computing "
                                      f"unit(s) {', '.join(busy) or futures[f].id}") from None
                if error is not None:
                    raise error
            if not pending:
                break
            if limit:
                now = time.monotonic()
                for u in units:
                    i, t0 = index[u.id], started[index[u.id]]
                    if t0 > 0 and now - t0 > limit + grace_s(limit):
                        k = len(names)
                        raise UnitTimeout(u.id, limit, describe_where(names, where[i * k:(i + 1) * k]))
        ok = True
        results = {futures[f].id: f.result() for f in futures}
        return [results[u.id] for u in units]
    finally:
        if not ok:  # a stuck or failed run: its workers must not keep working
            left = {*procs, *(getattr(pool, "_processes", None) or {}).values()}
            for p in left:
                if p.is_alive():
                    p.kill()
            for p in left:
                p.join(5)
        pool.shutdown(wait=ok, cancel_futures=not ok)
        manager = getattr(pool, "_executor_manager_thread", None)
        if not ok and manager is not None:  # it reaps the workers: let it finish, boundedly
            manager.join(10)


def _how(procs: list) -> str:
    """' (pid 123 killed by SIGKILL: out of memory?)' for the worker that died, if it can be told.
    The pool ends the other workers with SIGTERM once one has died, so that one is passed over."""
    ends = []
    for p in procs:
        p.join(2)  # the pool reaps its workers itself; join waits for that
        if p.exitcode is not None and p.exitcode != -signal.SIGTERM:
            ends.append((p.pid, p.exitcode))
    for pid, code in ends:
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hint = ": out of memory?" if name == "SIGKILL" else ""
            return f" (pid {pid} killed by {name}{hint})"
        if code:
            return f" (pid {pid} exited with code {code})"
    return ""
