"""Throughput of `twig`'s prepare-only run on the local engine against a bare loop doing the same work.

    .venv/bin/python bench/pipeline_throughput.py [--n 600] [--workers N] [--repeats 3]

Input: N photo-like JPEGs (1.0-1.6 MP, varied aspect ratios, gradients + shapes + mild noise,
quality 90), generated once into a temp folder from a fixed seed; generation is not timed.

Pipeline: `load_config(None, ["source.kind=folder", ..., "until=prepare", ...])` then
`pipeline.driver.build(config)`, into a fresh output folder each repeat (the whole call is timed:
plan, worker start-up, the units, finalize).

Bare loop: a spawn-context `multiprocessing.Pool` of the same size (in-process for one worker, as
the engine does); each worker takes a contiguous
chunk of the sorted files and, per file, does the same pixel work as the prepare stage (open, JPEG
draft to the target size, load, EXIF transpose, RGB; `ImageOps.fit` center crop to 384 with
BICUBIC, as pipeline.imaging.fit calls it; JPEG encode at quality 90; sha256), then writes one tar
(a .jpg and a small .json per sample) to a temp name and renames it. It does not compute the pipeline's pHash, build pydantic records, fsync or write
markers/rejects/manifest: that is the pipeline's overhead being measured. It uses neither the
pipeline's runner nor its engine, and imports nothing from the pipeline, so its workers start as
light as a script would. Its JPEGs are checked to be byte-identical to the pipeline's.

Both are timed from the listing of the input folder to the pool's exit. Start-up overhead is
measured on a tiny input (--small images, default 4 per worker, spread over all workers: the
pipeline's units are shrunk to fit): the difference of the two medians is the pipeline's fixed cost
per run over the bare loop's (worker imports and set-up, plan, finalize, the engine's polling).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import PIL
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the pipeline lives beside bench/
    sys.path.insert(0, str(ROOT))

SIZE = 384  # the defaults of pipeline.config.ImageConfig: size, quality, center_crop
QUALITY = 90
ASPECTS = (1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9, 9 / 16, 5 / 4, 2.0)


# ---------------------------------------------------------------- input generation (not timed)

def _make_image(args: tuple[int, int, Path]) -> int:
    """One photo-like JPEG: a smooth two-colour gradient with a low-frequency wave and soft-edged
    shapes (drawn at half size, then upscaled), plus mild Gaussian noise at full size;
    1.0-1.6 MP at a random aspect ratio. Returns its size in bytes."""
    import numpy as np
    from PIL import ImageDraw

    seed, i, folder = args
    rng = np.random.default_rng([seed, i])
    mp_ = rng.uniform(1.0, 1.6) * 1e6
    aspect = ASPECTS[int(rng.integers(len(ASPECTS)))]
    w = int(round(math.sqrt(mp_ * aspect)))
    h = int(round(mp_ / w))
    hw, hh = w // 2, h // 2

    yy, xx = np.mgrid[0:hh, 0:hw].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    c0, c1 = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    base = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    fx, fy = rng.uniform(0.5, 3.0, 2) * 2 * np.pi
    wave = 18 * np.sin(xx / hw * fx + rng.uniform(0, 6)) * np.cos(yy / hh * fy + rng.uniform(0, 6))
    base += wave[..., None]
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")

    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 16))):
        x0, y0 = rng.uniform(-0.1, 0.9) * hw, rng.uniform(-0.1, 0.9) * hh
        x1, y1 = x0 + rng.uniform(0.05, 0.5) * hw, y0 + rng.uniform(0.05, 0.5) * hh
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(3))
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=color)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=color)
        else:
            pts = [(float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))) for _ in range(5)]
            draw.polygon(pts, fill=color)
    img = img.resize((w, h), Image.Resampling.BICUBIC)

    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * 3.0
    arr = np.asarray(img, np.int16) + noise.astype(np.int16)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    path = folder / f"img_{i:05d}.jpg"
    img.save(path, "JPEG", quality=QUALITY)
    return path.stat().st_size


def generate(folder: Path, n: int, seed: int, workers: int) -> list[int]:
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(seed, i, folder) for i in range(n)]
    with mp.get_context("spawn").Pool(workers) as pool:
        return pool.map(_make_image, jobs, chunksize=8)


# ---------------------------------------------------------------- the bare loop

def _bare_chunk(args: tuple[list[str], str, int]) -> list[str]:
    """Prepare one contiguous chunk of files and write them as one tar; returns the JPEG sha256s."""
    paths, out_dir, idx = args
    members: list[tuple[str, bytes, bytes]] = []
    hashes = []
    for p in paths:
        raw = Path(p).read_bytes()
        img = Image.open(io.BytesIO(raw))
        if img.format == "JPEG":
            img.draft(None, (SIZE, SIZE))
        img.load()
        with contextlib.suppress(Exception):
            img = ImageOps.exif_transpose(img)
        if img.mode != "RGB":
            img = img.convert("RGB")
        if img.size != (SIZE, SIZE):
            img = ImageOps.fit(img, (SIZE, SIZE), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=QUALITY, subsampling=2, optimize=False, progressive=False)
        jpeg = buf.getvalue()
        digest = hashlib.sha256(jpeg).hexdigest()
        key = Path(p).stem
        meta = json.dumps({"key": key, "uri": p, "width": img.width, "height": img.height,
                           "sha256": digest}, separators=(",", ":")).encode()
        members.append((key, jpeg, meta))
        hashes.append(digest)
    final = Path(out_dir) / f"chunk-{idx:05d}.tar"
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for key, jpeg, meta in members:
            for ext, data in (("jpg", jpeg), ("json", meta)):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mode = len(data), 0o444
                tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, final)
    return hashes


def run_bare(src: Path, out: Path, workers: int) -> tuple[float, list[str], int]:
    """(seconds, JPEG sha256s in file order, processes used)."""
    t0 = time.perf_counter()
    out.mkdir(parents=True)
    files = sorted(str(p) for p in src.iterdir() if p.suffix == ".jpg")
    procs = min(workers, len(files))
    step = -(-len(files) // procs)
    tasks = [(files[i:i + step], str(out), k) for k, i in enumerate(range(0, len(files), step))]
    if procs <= 1:  # like the engine: one worker runs in this process
        parts = [_bare_chunk(t) for t in tasks]
    else:
        with mp.get_context("spawn").Pool(procs) as pool:
            parts = pool.map(_bare_chunk, tasks, chunksize=1)
    dt = time.perf_counter() - t0
    return dt, [h for part in parts for h in part], procs


# ---------------------------------------------------------------- the pipeline

PHASES = ("plan", "engine", "finalize")
_timings: dict[str, float] = {}


def _instrument() -> None:
    """Time build()'s three phases by wrapping the names it calls (in this process only)."""
    import pipeline.driver as drv

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                _timings[name] = _timings.get(name, 0.0) + time.perf_counter() - t
        wrapper.__wrapped__ = fn
        return wrapper

    if not hasattr(drv.plan_for, "__wrapped__"):
        engine_of = drv.get_engine
        drv.plan_for = timed("plan", drv.plan_for)
        drv.get_engine = lambda name: timed("engine", engine_of(name))
        drv.finalize = timed("finalize", drv.finalize)


def run_pipeline(src: Path, out: Path, workers: int, more: tuple[str, ...] = ()
                 ) -> tuple[float, dict[str, float], dict, int]:
    """(seconds, phase seconds, manifest, processes used)."""
    from pipeline.config import load_config
    from pipeline.driver import build

    _instrument()
    _timings.clear()
    config = load_config(None, ["source.kind=folder", f"source.path={src}", "until=prepare",
                                f"run.out={out}", "run.progress=false", f"run.workers={workers}",
                                *more])
    t0 = time.perf_counter()
    result = build(config)
    dt = time.perf_counter() - t0
    units = result.units
    procs = 1 if workers <= 1 or units <= 1 else min(workers, units)
    return dt, {**_timings, "total": dt}, result.manifest, procs


def pipeline_hashes(out: Path, manifest: dict) -> dict[str, str]:
    """uri -> sha256 of the .jpg members the pipeline wrote."""
    got = {}
    for shard in manifest["shards"]:
        with tarfile.open(out / shard["path"]) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name, m in members.items():
                if name.endswith(".json"):
                    rec = json.loads(tar.extractfile(m).read())
                    jpg = tar.extractfile(members[name[:-5] + ".jpg"]).read()
                    got[rec["source"]["uri"]] = hashlib.sha256(jpg).hexdigest()
    return got


# ---------------------------------------------------------------- main

def cpu_steal() -> float | None:
    """Seconds of CPU stolen by the hypervisor so far, all CPUs (None off Linux)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    cores = len(os.sched_getaffinity(0))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=600, help="images to generate (default 600)")
    ap.add_argument("--workers", type=int, default=cores, help=f"worker processes (default {cores})")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each (median reported)")
    ap.add_argument("--small", type=int, default=0,
                    help="images in the start-up probe (default 4 x workers; 0 = default, -1 = skip)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                    help="an extra config override for the pipeline runs, e.g. shard.max_records=150")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (its path is printed)")
    args = ap.parse_args(argv)
    w, n = args.workers, args.n
    small = 4 * w if args.small == 0 else args.small

    tmp = Path(tempfile.mkdtemp(prefix="twig-bench-"))
    try:
        src = tmp / "images"
        t = time.perf_counter()
        sizes = generate(src, n, args.seed, max(w, 1))
        print(f"generated {n} JPEGs in {time.perf_counter() - t:.1f}s (not timed): "
              f"median {statistics.median(sizes) / 1024:.0f} KiB, "
              f"{sum(sizes) / 2**20:.1f} MiB in all", flush=True)
        probe = None
        if 0 < small < n:
            probe = tmp / "small"
            probe.mkdir()
            for p in sorted(src.iterdir())[:small]:
                shutil.copyfile(p, probe / p.name)

        runs = 0

        def fresh() -> Path:
            nonlocal runs
            runs += 1
            return tmp / f"out-{runs:03d}"

        # the probe is too small for the default 200-record units: shrink them so that the
        # pipeline still spreads it over all workers (else it runs in-process, without a pool)
        probe_set = (f"shard.max_records={max(1, -(-small // w))}",)

        steal: dict[str, list[float]] = {"pipeline": [], "bare": []}

        def one(kind: str, folder: Path) -> tuple[float, tuple]:
            out = fresh()
            s0 = cpu_steal()
            if kind == "pipeline":
                more = (*args.sets, *(probe_set if folder == probe else ()))
                dt, phases, manifest, procs = run_pipeline(folder, out, w, more)
                extra = (phases, manifest, procs, out)
            else:
                dt, hashes, procs = run_bare(folder, out, w)
                extra = (hashes, procs, out)
            s1 = cpu_steal()
            if s0 is not None and s1 is not None and folder == src:
                steal[kind].append((s1 - s0) / (dt * cores))
            return dt, extra

        # warm-up (not reported): page cache, .pyc files, the first spawn
        for kind in ("pipeline", "bare"):
            _, extra = one(kind, probe or src)
            shutil.rmtree(extra[-1])
        steal = {"pipeline": [], "bare": []}

        times: dict[str, list[float]] = {"pipeline": [], "bare": []}
        phase_runs: list[dict[str, float]] = []
        procs = {}
        checked = False
        for r in range(args.repeats):
            for kind in ("pipeline", "bare"):  # interleaved, so drift hits both alike
                dt, extra = one(kind, src)
                times[kind].append(dt)
                st = f"  (CPU steal {steal[kind][-1]:.0%})" if steal[kind] else ""
                print(f"  repeat {r + 1}: {kind:8s} {dt:6.2f}s  {n / dt:6.1f} samples/s{st}",
                      flush=True)
                if kind == "pipeline":
                    phases, manifest, procs["pipeline"], out_p = extra
                    phase_runs.append(phases)
                    if r == 0:
                        units = [(sh["path"].split("/")[-1].split(".")[0], sh["records"])
                                 for sh in manifest["shards"]]
                        print(f"  pipeline units (records): "
                              f"{', '.join(f'{u} {k}' for u, k in units)}", flush=True)
                    c = manifest["counts"]
                    if c["written"] != n or c["rejected"]:
                        raise SystemExit(f"pipeline wrote {c['written']} of {n}, "
                                         f"rejected {c['rejected']}: not comparable")
                    if not checked:
                        ref = pipeline_hashes(out_p, manifest)
                else:
                    hashes, procs["bare"], out_b = extra
                    if not checked:
                        files = sorted(p.relative_to(src).as_posix() for p in src.iterdir())
                        same = sum(ref.get(f"folder://{f}") == h for f, h in zip(files, hashes, strict=True))
                        print(f"  output check: {same}/{n} JPEGs byte-identical between pipeline "
                              f"and bare loop"
                              + ("" if same == n else ": WARNING, they do different pixel work"),
                              flush=True)
                        checked = True
                    shutil.rmtree(out_b)
                    shutil.rmtree(out_p)

        small_t: dict[str, list[float]] = {}
        small_ph: list[dict[str, float]] = []
        if probe is not None:
            small_t = {"pipeline": [], "bare": []}
            for _ in range(args.repeats):
                for kind in ("pipeline", "bare"):
                    dt, extra = one(kind, probe)
                    small_t[kind].append(dt)
                    if kind == "pipeline":
                        small_ph.append(extra[0])
                    shutil.rmtree(extra[-1])

        med = {k: statistics.median(v) for k, v in times.items()}
        rate = {k: n / med[k] for k in med}
        per_core = {k: rate[k] / procs[k] for k in rate}

        print()
        print(f"prepare-only, {n} images, {w} workers requested, {cores} cores, "
              f"median of {args.repeats} repeats (Python {sys.version.split()[0]}, "
              f"Pillow {PIL.__version__})")
        print(f"| {'run':<14} | {'procs':>5} | {'median s':>8} | {'min s':>6} | {'max s':>6} | "
              f"{'samples/s':>9} | {'samples/s/core':>14} |")
        print("|" + "|".join("-" * (k + 1) + ":" for k in (14, 5, 8, 6, 6, 9, 14)).replace(
            "-" * 15 + ":", "-" * 16, 1) + "|")
        for k, label in (("pipeline", "twig pipeline"), ("bare", "bare loop")):
            print(f"| {label:<14} | {procs[k]:>5} | {med[k]:>8.2f} | {min(times[k]):>6.2f} | "
                  f"{max(times[k]):>6.2f} | {rate[k]:>9.1f} | {per_core[k]:>14.1f} |")
        ratio, ratio_core = rate["pipeline"] / rate["bare"], per_core["pipeline"] / per_core["bare"]
        print()
        print(f"ratio pipeline/bare: {ratio:.3f}   per core: {ratio_core:.3f}   "
              f"(aim >= 0.8 per core: {'met' if ratio_core >= 0.8 else 'NOT met'})")
        if steal["pipeline"] and steal["bare"]:
            print(f"CPU steal (hypervisor) during the timed runs, median: pipeline "
                  f"{statistics.median(steal['pipeline']):.0%}, bare "
                  f"{statistics.median(steal['bare']):.0%} of {cores} cores")

        def phase_line(runs: list[dict[str, float]]) -> str:
            for x in runs:
                x["other"] = x["total"] - sum(x.get(p, 0.0) for p in PHASES)
            ph = {p: statistics.median(x.get(p, 0.0) for x in runs) for p in (*PHASES, "other")}
            return ", ".join(f"{p} {v:.2f}" for p, v in ph.items())

        print(f"pipeline phases (median s): {phase_line(phase_runs)}  "
              f"(engine = worker start-up + the units + pool exit)")
        if small_t:
            ts = {k: statistics.median(v) for k, v in small_t.items()}
            print(f"start-up probe ({small} images, median of {args.repeats}): pipeline "
                  f"{ts['pipeline']:.2f}s, bare {ts['bare']:.2f}s -> pipeline fixed overhead "
                  f"~{ts['pipeline'] - ts['bare']:.2f}s per run "
                  f"(= {(ts['pipeline'] - ts['bare']) * rate['bare']:.0f} bare-loop samples)")
            print(f"  probe pipeline phases (median s): {phase_line(small_ph)}")
        if args.keep:
            print(f"kept {tmp}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
