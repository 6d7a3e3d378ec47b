"""The bundled local OpenAI-compatible server (`annotators.teacher.localserver`, the stand-in for a
remote API), with one addition for the crash tests: it counts every request it receives by the
teacher client's own cache key, so a test can tell exactly which requests were sent twice.

`GET /_keys` answers {"keys": {cache key: times received}, "inflight": requests being answered,
"gone": answers whose client had already hung up}. Run it as
`python -m tests.reliability._crash_server --latency 0.05`; `running(...)` starts it on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

from aiohttp import web

from annotators.teacher.cache import request_key
from annotators.teacher.localserver import LocalServer
from tests.conftest import REPO

_KINDS = {"/v1/chat/completions": "/chat/completions", "/v1/images/generations": "/images/generations"}


class KeyCounter:
    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()
        self.inflight = 0
        self.gone = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        kind = _KINDS.get(request.path)
        if kind is None:
            return await handler(request)
        try:  # the body is read once here; aiohttp keeps it for the handler
            key = request_key(kind, json.loads(await request.read()))
        except ValueError:
            key = "unreadable"
        self.keys[key] += 1
        self.inflight += 1
        try:
            return await handler(request)
        finally:
            self.inflight -= 1
            if request.transport is None or request.transport.is_closing():
                self.gone += 1

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": dict(self.keys), "inflight": self.inflight,
                                  "gone": self.gone})


async def serve(latency: float, port: int) -> None:
    counter = KeyCounter()
    app = LocalServer(latency=latency).app()
    app.middlewares.append(counter.middleware)
    app.router.add_get("/_keys", counter.get)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{bound}/v1", flush=True)
    await asyncio.Event().wait()


@contextlib.contextmanager
def running(latency: float) -> Iterator[str]:
    """Start the server in a subprocess on a free port; yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.reliability._crash_server", "--latency",
                             str(latency)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"crash test server did not start: {line!r}")
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    a = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(a.latency, a.port))


if __name__ == "__main__":
    main()
