"""Samples/s of the local, Beam and Ray engines on the same synthetic config, in one run.

    .venv/bin/python bench/engines.py [--count 2420] [--workers N] [--repeats 3]

Config: the default synthetic scene config (`configs/scene.yaml` defaults) with `source.count`
scenes (2,420 give ~2,000 trajectories after dedup) and `run.workers` = all cores; Beam on its
FnApiRunner with `direct_running_mode=multi_processing` and that many worker processes; Ray on a
local instance (`ray.init()` on all cores, started once; its start-up is reported on its own).

Each engine runs `pipeline.driver.build(config)` into a fresh folder, timed whole (plan, engine,
finalize), twice per repeat: on a small probe (`--small` scenes, one unit per worker) and on the
full count. Start-up is the probe's wall time (worker processes, imports, set-up; for Beam the
SDK harnesses; the first repeat's probe is also reported as the cold start, since Ray keeps
its worker processes between runs). Steady samples/s = (full - small inputs) / (full - small seconds): the rate once
start-up is paid. Engines alternate within each repeat; medians are reported, and every engine's
output is checked byte-identical to the local engine's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ENGINES = ("local", "beam", "ray")


def digest_tree(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(out)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def timed_build(engine: str, count: int, workers: int, out: Path, max_records: int) -> tuple[float, dict]:
    from pipeline.config import load_config
    from pipeline.driver import build

    config = load_config(ROOT / "configs" / "scene.yaml", [
        f"source.count={count}", f"run.workers={workers}", f"run.engine={engine}", f"run.out={out}",
        "run.progress=false", f"shard.max_records={max_records}"])
    t0 = time.perf_counter()
    result = build(config)
    return time.perf_counter() - t0, result.manifest["counts"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2420, help="synthetic scenes (default 2420)")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--small", type=int, default=None, help="probe scenes (default 20 per worker)")
    args = ap.parse_args()
    small = args.small or 20 * args.workers

    import logging

    logging.basicConfig(level=logging.WARNING)
    import ray

    from pipeline.engines.ray import connect

    t0 = time.perf_counter()
    connect(None)
    ray_init = time.perf_counter() - t0

    tmp = Path(tempfile.mkdtemp(prefix="twig-engines-", dir=str(ROOT / "data")
                                if (ROOT / "data").is_dir() else None))
    rows: dict[str, dict[str, list[float]]] = {e: {"small": [], "full": []} for e in ENGINES}
    counts: dict = {}
    digests: dict[str, set[str]] = {e: set() for e in ENGINES}
    try:
        for rep in range(args.repeats):
            for engine in ENGINES:
                out = tmp / f"{engine}-{rep}"
                dt, _ = timed_build(engine, small, args.workers, out / "small",
                                    max(1, small // args.workers))
                rows[engine]["small"].append(dt)
                dt, counts = timed_build(engine, args.count, args.workers, out / "full", 100)
                rows[engine]["full"].append(dt)
                digests[engine].add(digest_tree(out / "full"))
                shutil.rmtree(out)
                print(f"repeat {rep + 1}/{args.repeats} {engine:5s}: probe {rows[engine]['small'][-1]:.2f} s, "
                      f"full {dt:.2f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        ray.shutdown()

    same = all(d == digests["local"] for d in digests.values()) and len(digests["local"]) == 1
    n = args.count
    result = {"count": n, "written": counts.get("written"), "workers": args.workers,
              "repeats": args.repeats, "ray_init_s": round(ray_init, 2), "identical": same, "engines": {}}
    base = None
    print(f"\n{n} scenes -> {counts.get('written')} trajectories; {args.workers} workers; "
          f"median of {args.repeats}; ray.init {ray_init:.2f} s (once per process)")
    print("| engine | full run s | start-up s (cold) | steady samples/s | vs local | full-run samples/s | vs local |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for engine in ENGINES:
        full = statistics.median(rows[engine]["full"])
        probe = statistics.median(rows[engine]["small"])
        steady = (n - small) / max(full - probe, 1e-9)
        overall = n / full
        if base is None:
            base = (steady, overall)
        cold = rows[engine]["small"][0]
        result["engines"][engine] = {"full_s": round(full, 2), "startup_s": round(probe, 2),
                                     "cold_startup_s": round(cold, 2),
                                     "steady_per_s": round(steady, 1), "steady_vs_local": round(steady / base[0], 3),
                                     "overall_per_s": round(overall, 1), "overall_vs_local": round(overall / base[1], 3)}
        print(f"| {engine} | {full:.2f} | {probe:.2f} ({cold:.2f}) | {steady:.1f} | {steady / base[0]:.3f} | "
              f"{overall:.1f} | {overall / base[1]:.3f} |")
    print(f"\noutputs byte-identical across engines: {same}")
    print(json.dumps(result))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
