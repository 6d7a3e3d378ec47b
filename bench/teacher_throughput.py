"""Teacher client throughput against a local OpenAI-compatible server with fixed latency.

N requests at a total concurrency C go through the real client path (`Teacher.ask`: structured
output, limits, retries, on-disk cache writes, parsing and validation) spread over W worker
processes with 1/W of the concurrency each, as the local engine runs it. The baseline is the ideal
rate C / latency; the ratio measured / ideal is the figure (1.0 is impossible: N/C rounds up).

    .venv/bin/python bench/teacher_throughput.py            # 2000 requests, C=64, 200 ms, W=4
    .venv/bin/python bench/teacher_throughput.py --images   # each request also carries an image
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

from PIL import Image


def _worker(url: str, n: int, share: float, cache: str, images: bool, barrier, out) -> None:
    import os

    os.environ["BENCH_KEY"] = "sk-bench"
    from annotators.teacher import Endpoint, Teacher, TeacherConfig, new_event_loop, prompts
    from annotators.teacher.outputs import GuideOut

    async def main() -> float:
        t = Teacher(TeacherConfig(model="bench-model"),
                    {"default": Endpoint(base_url=url, api_key_env="BENCH_KEY", concurrency=64)},
                    cache, share)
        pics = (Image.new("RGB", (384, 384), (90, 140, 200)),) if images else ()
        asks = [prompts.render(prompts.GUIDE, k=3, prompt=f"object number {i}", previous="(none yet)",
                               band=1, y0=0, y1=128, height=384) for i in range(n)]
        await t.ask("guide", asks[0], GuideOut, pics)  # warm: imports, connection pool
        barrier.wait()
        t0 = time.perf_counter()
        res = await asyncio.gather(*(t.ask("guide", a, GuideOut, pics) for a in asks[1:]))
        dt = time.perf_counter() - t0
        await t.aclose()
        assert len(res) == n - 1
        return dt

    loop = new_event_loop()  # the loop the pipeline's workers use
    out.put(loop.run_until_complete(main()))
    loop.close()

def run(n: int, concurrency: int, latency: float, workers: int, images: bool) -> dict:
    from annotators.teacher.localserver import running

    ctx = mp.get_context("spawn")
    # the cache lives with the output, as in a real run (data/ is where `make dataset` writes)
    Path("data").mkdir(exist_ok=True)
    with running("--latency", str(latency)) as url, tempfile.TemporaryDirectory(dir="data") as cache:
        barrier, out = ctx.Barrier(workers), ctx.Queue()
        per = n // workers + 1  # +1: the warm-up request each worker sends before the clock starts
        procs = [ctx.Process(target=_worker, args=(url, per, 1 / workers, cache, images, barrier, out))
                 for _ in range(workers)]
        for p in procs:
            p.start()
        times = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
    wall = max(times)
    ideal = n * latency / concurrency
    best = -(-n // concurrency) * latency
    return {"requests": n, "concurrency": concurrency, "latency_s": latency, "workers": workers,
            "images": images, "seconds": round(wall, 3), "ideal_s": ideal,
            "ratio": round(ideal / wall, 3), "best_possible_ratio": round(ideal / best, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--workers", type=int, default=4,
                   help="processes (the local engine runs teacher-bound work on max(4, cores))")
    p.add_argument("--images", action="store_true")
    p.add_argument("--repeat", type=int, default=3, help="report the median of this many runs")
    a = p.parse_args()
    runs = [run(a.requests, a.concurrency, a.latency, a.workers, a.images) for _ in range(a.repeat)]
    for r in runs:
        print(r)
    med = sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2]
    print(f"median ratio {med['ratio']} of ideal ({a.requests} requests, concurrency {a.concurrency}, "
          f"{a.latency * 1000:.0f} ms latency, {a.workers} workers; best possible "
          f"{med['best_possible_ratio']})")


if __name__ == "__main__":
    main()
