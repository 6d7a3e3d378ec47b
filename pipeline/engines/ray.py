"""The Ray engine: one Ray task per work unit, on this machine or a cluster; the driver commits.

A task computes a unit (every stage, in memory) and returns it; the driver writes each unit as it
arrives, so the output folder is only where the driver runs and the cluster needs no shared
filesystem. Ray re-runs a task whose worker or node died (`run.ray.max_retries`); a unit's bytes
depend only on its inputs, so a re-run writes the same bytes. Each task asks for the resources the
stages declare (`Stage.resources`), unless `run.ray` says otherwise, and at most as many units are
in flight as the cluster can run at once, which is also how the teacher's limits are shared. The
driver's teacher API keys reach the workers with the tasks, so a cluster's nodes need not hold them.

Why tasks and not Ray Data: a unit is already the batch that becomes one shard and one resume
marker; Ray Data would re-chunk the records and lose that, and add a streaming executor's start-up
for nothing the units need.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter

import ray

from pipeline.engines import EngineError, grace_s
from pipeline.plan import Unit, largest_first
from pipeline.progress import Bar
from pipeline.runner import UnitResult, UnitRunner, UnitTimeout

log = logging.getLogger("twig")

_RUNNERS: dict[str, UnitRunner] = {}  # per worker process: one set-up runner per run


def compute_unit(token: str, runner: UnitRunner, keys: dict[str, str], unit: Unit
                 ) -> tuple[str, int, UnitResult]:
    """The task body (its process title reads `ray::compute_unit` while it runs)."""
    mine = _RUNNERS.get(token)
    if mine is None:  # first unit of this run in this worker: pay the set-up once
        _RUNNERS.clear()
        for name, value in keys.items():  # the driver's API keys, unless the node has its own
            os.environ.setdefault(name, value)
        mine = _RUNNERS[token] = runner
    return ray.get_runtime_context().get_node_id(), os.getpid(), mine.compute(unit)


def connect(address: str | None) -> float:
    """Join the cluster at `address` (or RAY_ADDRESS, or start a local instance); the seconds it took.
    A process already connected keeps its connection."""
    t0 = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 configure_logging=True)
    return time.perf_counter() - t0


def _slots(runner: UnitRunner, units: list[Unit]) -> tuple[int, dict]:
    """How many units run at once, and the options of each task."""
    cfg, need = runner.config.run.ray, runner.resources()
    cpus = cfg.num_cpus if cfg.num_cpus is not None else need.cpus
    gpus = cfg.num_gpus if cfg.num_gpus is not None else need.gpus
    have = ray.cluster_resources()
    asks = {"CPU": cpus, "GPU": gpus, **cfg.resources}
    fits = [math.floor(have.get(name, 0.0) / amount + 1e-9) for name, amount in asks.items() if amount]
    if any(f < 1 for f in fits):
        missing = {n: a for n, a in asks.items() if a and have.get(n, 0.0) < a}
        raise EngineError(f"the Ray cluster cannot run one unit: it needs {missing}, the cluster "
                          f"has {({n: have.get(n, 0.0) for n in missing})}")
    caps = [len(units), *fits]
    caps += [c for c in (cfg.max_concurrency, need.concurrency) if c]
    options = {"num_cpus": cpus, "num_gpus": gpus, "resources": dict(cfg.resources),
               "max_retries": cfg.max_retries, "retry_exceptions": False}
    return max(1, min(caps)), options


def run_ray(runner: UnitRunner, units: list[Unit], workers: int, progress: bool) -> list[dict]:
    """Compute every unit on Ray, committing each on this machine as it comes back."""
    if not units:
        return []
    seconds = connect(runner.config.run.ray.address)
    slots, options = _slots(runner, units)
    shipped = runner.for_workers(slots)  # the teacher's limits split over the units in flight
    token = f"{time.time_ns()}-{id(runner)}"
    task = ray.remote(compute_unit).options(**options)
    log.info("ray: %d units, up to %d at once (%s per unit), connected in %.1fs", len(units), slots,
             ", ".join(f"{k}={v}" for k, v in options.items() if k in ("num_cpus", "num_gpus") and v),
             seconds)
    ref = ray.put(shipped)
    # API keys travel as a task argument (object-store memory), never in a runtime_env, which
    # Ray records in its logs and dashboard
    keys = ray.put({v: os.environ[v] for v in runner.key_variables() if v in os.environ})
    todo = largest_first(units)
    flying: dict[ray.ObjectRef, Unit] = {}
    since: dict[ray.ObjectRef, float] = {}
    limit = runner.config.run.unit_timeout_s
    markers: dict[str, dict] = {}
    nodes: Counter[str] = Counter()
    bar = Bar(sum(len(u.items) for u in units), progress)
    try:
        while todo or flying:
            while todo and len(flying) < slots:
                unit = todo.pop(0)
                pending = task.remote(token, ref, keys, unit)
                flying[pending], since[pending] = unit, time.monotonic()
            done, _ = ray.wait(list(flying), num_returns=1, timeout=1.0)
            if not done:
                # a task normally stops itself at the limit (UnitRunner.compute); one whose stage
                # blocks its event loop is cancelled here (its start is taken as its submission:
                # no more units are in flight than the cluster runs at once)
                late = [r for r in flying if limit and time.monotonic() - since[r] > limit + grace_s(limit)]
                if late:
                    raise UnitTimeout(flying[late[0]].id, limit, "a Ray task that did not stop "
                                      "by itself (stage unknown; its task is cancelled)")
                continue
            unit = flying.pop(done[0])
            try:
                node, pid, result = ray.get(done[0])
            except ray.exceptions.RayTaskError as e:  # a stage's fatal error: its own message
                raise (e.cause if isinstance(e.cause, Exception) else EngineError(str(e))) from None
            except ray.exceptions.RayError as e:
                raise EngineError(f"unit {unit.id} failed on Ray after {options['max_retries']} "
                                  f"retries: {type(e).__name__}: {str(e).splitlines()[0]}") from None
            markers[unit.id] = runner.commit(result)
            nodes[node[:8]] += 1
            log.debug("ray: %s done on node %s, worker pid %d", unit.id, node[:8], pid)
            bar.tick(result.read, result.requests)
    finally:
        bar.close()
        for pending in flying:
            ray.cancel(pending, force=True)
    log.info("ray: %d units on %d node(s): %s", sum(nodes.values()), len(nodes),
             ", ".join(f"{n} {c}" for n, c in sorted(nodes.items())))
    return [markers[u.id] for u in units]
