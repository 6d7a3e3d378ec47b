"""A local OpenAI-compatible server for tests, benchmarks and dry runs, with fault injection.

It speaks `POST /v1/chat/completions` and `POST /v1/images/generations` as the OpenAI API does:
images sent as data URLs are decoded and checked, `response_format` `json_schema` (strict) is
honoured by answering an instance of the schema, `json_object` needs the word JSON in the
messages, and errors use OpenAI's error body. A marker `fault:<name>` anywhere in a request's text
injects a fault:

  429         HTTP 429 with Retry-After: 1 for the first two attempts, then an answer
  500         HTTP 500 for the first attempt, then an answer
  always500   HTTP 500 every time
  hang        the first attempt never answers (the client must time out), then an answer
  malformed   an answer that is not JSON, every time (also after a repair request)
  malformed1  not JSON at first; the repair request gets a valid answer
  length      a truncated answer with finish_reason "length"
  refusal     a refusal (message.refusal set, content null)

Seeded rate-based faults (`--fault-rate 0.3 --fault-kinds 429,500,hang,malformed,length,refusal,reset
--fault-seed 7`) hit any request, marker or not: each attempt of a request draws from a hash of
(seed, request body, attempt number), so the same run gets the same faults and a retry can succeed.

  429         HTTP 429 with Retry-After (and retry-after-ms, as OpenAI sends) of --retry-after-s
  500         HTTP 500
  hang        no answer for --hang-s seconds (past the client's timeout)
  malformed   chat: content that is not JSON, or JSON that breaks the schema, or an HTTP body
              that is not JSON at all; images: a body that is not JSON
  length      chat: half the content with finish_reason "length"; images: the PNG cut in half
  refusal     chat: message.refusal set, content null; images: HTTP 400 content_policy_violation
  reset       the TCP connection closed (RST) before the response, or halfway through its body

`GET /_stats` returns request counts, `injected_<kind>` for rate-based faults, `bodies` (distinct
request bodies) and `max_attempts` (the most times one identical body arrived). Run it:
`python -m annotators.teacher.localserver --port 8000`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import json
import math
import re
import socket
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from PIL import Image, ImageDraw

_FAULT = re.compile(r"fault:([a-z0-9]+)")
_WORDS = ["soft", "bright", "muted", "textured", "smooth", "weathered", "glossy", "pale", "deep"]
_DATA_URL = re.compile(r"^data:image/(jpeg|png|webp|gif);base64,(.*)$", re.S)
RATE_KINDS = ("429", "500", "hang", "malformed", "length", "refusal", "reset")


class Reset(Exception):
    """Drop the connection instead of answering (after `partial` bytes of the body, if given)."""

    def __init__(self, partial: bytes | None = None) -> None:
        super().__init__("connection reset")
        self.partial = partial


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.headers = status, message, type_, code, headers


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(json.dumps(parts).encode()).digest()[:8], "big")


def instance(schema: dict[str, Any], seed: str, path: str = "$") -> Any:
    """A deterministic value that follows the (strict) JSON Schema."""
    t = schema.get("type")
    if "enum" in schema:
        return schema["enum"][_h(seed, path) % len(schema["enum"])]
    if t == "object":
        return {k: instance(v, seed, f"{path}.{k}") for k, v in schema.get("properties", {}).items()}
    if t == "array":
        n = max(schema.get("minItems", 1), 1)
        n = min(n, schema.get("maxItems", n))
        return [instance(schema.get("items", {}), seed, f"{path}[{i}]") for i in range(n)]
    if t == "integer" or t == "number":
        lo, hi = schema.get("minimum", 0), schema.get("maximum", 100)
        if hi - lo >= 50:  # scores: mostly good, some poor
            lo = hi - 40 if _h(seed, path, "poor") % 4 else lo
        return lo + _h(seed, path) % (int(hi - lo) + 1)
    if t == "boolean":
        return bool(_h(seed, path) % 2)
    words = re.findall(r"[a-z]+", seed.lower())[:8] or ["scene"]
    w = _WORDS[_h(seed, path) % len(_WORDS)]
    where = path.split(".")[-1].strip("$[]0123456789") or "view"
    text = f"{w} {' '.join(words[-4:])} as seen in {where}, variant {_h(seed, path, 'n') % 10000}"
    return text[: max(schema.get("maxLength", 200), 1)].ljust(schema.get("minLength", 0), ".")


def _check_strict(schema: Any, where: str = "schema") -> None:
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            props = set(schema.get("properties", {}))
            if schema.get("additionalProperties") is not False:
                raise ApiError(400, f"Invalid schema for response_format: In context={where}, "
                                    "'additionalProperties' is required to be supplied and to be false.")
            if set(schema.get("required", [])) != props:
                raise ApiError(400, f"Invalid schema for response_format: In context={where}, "
                                    "'required' must include every key in properties.")
        for k, v in schema.items():
            if isinstance(v, (dict, list)):
                _check_strict(v, f"{where}.{k}")
    elif isinstance(schema, list):
        for v in schema:
            _check_strict(v, where)


class LocalServer:
    def __init__(self, latency: float = 0.0, api_key: str | None = None, json_schema: bool = True,
                 max_image_side: int = 4096, hang_s: float = 3600.0, fault_rate: float = 0.0,
                 fault_kinds: tuple[str, ...] = RATE_KINDS, fault_seed: int = 0,
                 retry_after_s: float = 1.0) -> None:
        self.latency, self.api_key, self.json_schema = latency, api_key, json_schema
        self.max_image_side, self.hang_s = max_image_side, hang_s
        unknown = set(fault_kinds) - set(RATE_KINDS)
        if unknown or not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault kinds must be among {RATE_KINDS} and the rate in [0, 1]")
        self.fault_rate, self.fault_kinds, self.fault_seed = fault_rate, tuple(fault_kinds), fault_seed
        self.retry_after_s = retry_after_s
        self.attempts: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()  # every request body -> times it arrived
        self.stats: Counter[str] = Counter()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._wrap(self.chat))
        app.router.add_post("/v1/images/generations", self._wrap(self.images))
        app.router.add_get("/_stats", self.get_stats)
        return app

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response({**self.stats, "bodies": len(self.sent),
                                  "max_attempts": max(self.sent.values(), default=0)})

    def _wrap(self, handler):
        async def run(request: web.Request) -> web.StreamResponse:
            self.stats["requests"] += 1
            try:
                self._auth(request)
                try:
                    body = json.loads(await request.read())
                except ValueError:
                    raise ApiError(400, "We could not parse the JSON body of your request.") from None
                if not isinstance(body, dict):
                    raise ApiError(400, "The request body must be a JSON object.")
                return await handler(body)
            except ApiError as e:
                self.stats[f"status_{e.status}"] += 1
                return web.json_response(
                    {"error": {"message": e.message, "type": e.type, "param": None, "code": e.code}},
                    status=e.status, headers=e.headers)
            except Reset as e:
                return await _reset(request, e.partial)
        return run

    def _draw_fault(self, body: dict) -> tuple[str | None, int]:
        """The rate-based fault for this attempt of this request body, if any, and which variant
        of it (0-2): a hash of (seed, body, attempt number), so a run gets the same faults."""
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        self.sent[key] += 1
        if self.fault_rate <= 0 or not self.fault_kinds:
            return None, 0
        n = self.sent[key]
        if _h("rate", self.fault_seed, key, n) / 2**64 >= self.fault_rate:
            return None, 0
        kind = self.fault_kinds[_h("kind", self.fault_seed, key, n) % len(self.fault_kinds)]
        return kind, _h("variant", self.fault_seed, key, n) % 3

    async def _transport_fault(self, kind: str | None, variant: int) -> None:
        """Faults before any answer is made: 429, 500, hang, reset (a dropped connection; the
        other half of resets cut the body short, see the handlers)."""
        if kind in ("429", "500", "hang", "reset"):
            self.stats[f"injected_{kind}"] += 1
        if kind == "429":
            s = self.retry_after_s
            raise ApiError(429, f"Rate limit reached for requests. Please try again in {s:g}s.",
                           "requests", "rate_limit_exceeded",
                           headers={"Retry-After": str(max(1, math.ceil(s))),
                                    "retry-after-ms": str(round(s * 1000))})
        if kind == "500":
            raise ApiError(500, "The server had an error while processing your request.", "server_error")
        if kind == "hang":
            await asyncio.sleep(self.hang_s)
        if kind == "reset" and variant == 0:
            raise Reset()

    def _auth(self, request: web.Request) -> None:
        if self.api_key is None:
            return
        got = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if got != self.api_key:
            shown = f"{got[:3]}***{got[-4:]}" if len(got) > 8 else "***"
            raise ApiError(401, f"Incorrect API key provided: {shown}. You can find your API key "
                                "at https://platform.openai.com/account/api-keys.", code="invalid_api_key")

    async def _fault(self, body: dict, text: str) -> str | None:
        """Apply transport faults; return the content fault to apply, if any."""
        m = _FAULT.search(text)
        if not m:
            await asyncio.sleep(self.latency)
            return None
        fault = m.group(1)
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        self.attempts[key] += 1
        n = self.attempts[key]
        self.stats[f"fault_{fault}"] += 1
        if fault == "429" and n <= 2:
            raise ApiError(429, "Rate limit reached for requests. Please try again in 1s.",
                           "requests", "rate_limit_exceeded", headers={"Retry-After": "1"})
        if (fault == "500" and n == 1) or fault == "always500":
            raise ApiError(500, "The server had an error while processing your request.", "server_error")
        if fault == "hang" and n == 1:
            await asyncio.sleep(self.hang_s)
        await asyncio.sleep(self.latency)
        return fault

    def _check_images(self, messages: list) -> int:
        count = 0
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if not isinstance(content, list):
                continue
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "image_url":
                    continue
                url = (part.get("image_url") or {}).get("url", "")
                match = _DATA_URL.match(url)
                if not match:
                    raise ApiError(400, "Invalid image_url: expected a base64 data URL.")
                try:
                    im = Image.open(io.BytesIO(base64.b64decode(match.group(2), validate=True)))
                    im.load()
                except Exception:
                    raise ApiError(400, "You uploaded an unsupported image. Please make sure your "
                                        "image is valid.", code="invalid_image") from None
                if max(im.size) > self.max_image_side:
                    raise ApiError(400, f"Image too large: {im.size} > {self.max_image_side}")
                count += 1
        self.stats["images_checked"] += count
        return count

    async def chat(self, body: dict) -> web.Response:
        messages = body.get("messages")
        if not isinstance(body.get("model"), str) or not isinstance(messages, list) or not messages:
            raise ApiError(400, "'model' and a non-empty 'messages' list are required.")
        texts = []
        for m in messages:
            c = m.get("content") if isinstance(m, dict) else None
            if isinstance(c, str):
                texts.append(c)
            elif isinstance(c, list):
                texts += [p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text"]
        text = "\n".join(texts)
        n_images = self._check_images(messages)
        seen = hashlib.sha256(json.dumps(messages[:2], sort_keys=True).encode()).hexdigest()[:8]
        fmt = body.get("response_format") or {"type": "text"}
        schema: dict | None = None
        if fmt.get("type") == "json_schema":
            if not self.json_schema:
                raise ApiError(400, "Invalid parameter: 'response_format' of type 'json_schema' is "
                                    "not supported with this model.", code="unsupported_parameter")
            spec = fmt.get("json_schema") or {}
            schema = spec.get("schema")
            if not isinstance(schema, dict) or not spec.get("name"):
                raise ApiError(400, "response_format.json_schema needs a name and a schema.")
            if spec.get("strict"):
                _check_strict(schema)
        elif fmt.get("type") == "json_object" and "json" not in text.lower():
            raise ApiError(400, "'messages' must contain the word 'json' in some form, to use "
                                "'response_format' of type 'json_object'.")
        if schema is None and "JSON Schema:" in text:
            with contextlib.suppress(ValueError):
                schema = json.JSONDecoder().raw_decode(text.split("JSON Schema:", 1)[1].strip())[0]
        self.stats["chat"] += 1
        fault = await self._fault(body, text)
        drawn, variant = self._draw_fault(body)
        await self._transport_fault(drawn, variant)
        user = next((t for t in texts[::-1] if t), "")
        first_user = texts[1] if len(texts) > 1 else user
        seed = f"{first_user} #{seen}"  # the answer depends on the text and the images, as a model's does
        value = instance(schema, seed) if schema else {"answer": instance({"type": "string"}, seed)}
        content: str | None = json.dumps(value)
        if fmt.get("type", "text") == "text":
            content = f"Here is the answer:\n```json\n{json.dumps(value, indent=2)}\n```"
        finish, refusal = "stop", None
        repairing = any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages)
        if drawn in ("malformed", "length", "refusal"):
            self.stats[f"injected_{drawn}"] += 1
            fault = drawn
            if drawn == "malformed" and variant == 1:
                fault = "schema"
            elif drawn == "malformed" and variant == 2:  # the HTTP body itself is not JSON
                return web.Response(text="<html><body>502 Bad Gateway</body></html>",
                                    content_type="application/json")
        if fault == "malformed" or (fault == "malformed1" and not repairing):
            content = "Sure! {'guide': the image shows, }"
        elif fault == "schema":  # JSON, but not the object the schema asks for
            content = json.dumps({"note": "here is my answer", "value": [1, 2, 3]})
        elif fault == "length":
            content, finish = content[: len(content) // 2], "length"
        elif fault == "refusal":
            content, refusal = None, "I'm sorry, but I can't help with that request."
        pt = sum(len(t) for t in texts) // 4 + 85 * n_images
        ct = len(content or refusal or "") // 4
        if drawn == "reset":  # headers and half the body, then the connection drops
            raise Reset(json.dumps({"id": "chatcmpl-cut", "choices": [{"message": {
                "content": content}}]}).encode()[:60])
        return web.json_response({
            "id": f"chatcmpl-{_h(body.get('model'), text) % 10**12}", "object": "chat.completion",
            "created": 1700000000, "model": body["model"], "system_fingerprint": "twig-local",
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
        })

    async def images(self, body: dict) -> web.Response:
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(400, "'prompt' is required.")
        size = body.get("size") or "1024x1024"
        m = re.fullmatch(r"(\d+)x(\d+)", size if size != "auto" else "1024x1024")
        if not m or not 16 <= int(m.group(1)) <= 4096 or not 16 <= int(m.group(2)) <= 4096:
            raise ApiError(400, f"Invalid size {size!r}.", code="invalid_size")
        if body.get("response_format") not in (None, "b64_json"):
            raise ApiError(400, "This server returns images as b64_json only.")
        self.stats["images"] += 1
        await self._fault(body, prompt)
        drawn, variant = self._draw_fault(body)
        await self._transport_fault(drawn, variant)
        w, h = int(m.group(1)), int(m.group(2))
        png = draw_bands(prompt, w, h)
        if drawn in ("malformed", "length", "refusal"):
            self.stats[f"injected_{drawn}"] += 1
        if drawn == "malformed":
            return web.Response(text="upstream error", content_type="application/json")
        if drawn == "length":
            png = png[: len(png) // 2]
        if drawn == "refusal":
            raise ApiError(400, "Your request was rejected as a result of our safety system.",
                           code="content_policy_violation")
        if drawn == "reset":
            raise Reset(b'{"created": 1700000000, "data": [{"b64_json": "iVBORw0KGgo')
        return web.json_response({
            "created": 1700000000, "data": [{"b64_json": base64.b64encode(png).decode()}],
            "usage": {"input_tokens": len(prompt) // 4, "output_tokens": 272,
                      "total_tokens": len(prompt) // 4 + 272},
        })


def draw_bands(prompt: str, w: int, h: int) -> bytes:
    """A deterministic picture for a prompt: a gradient sky, a few shapes, a floor."""
    im = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(im)
    base = _h(prompt)
    for y in range(0, h, 4):
        c = (base >> (y % 24)) & 0xFF
        d.rectangle([0, y, w, y + 4], fill=(c, (c * 3 + y) % 256, (200 + y) % 256))
    for i in range(3):
        x0 = (base >> (8 * i)) % max(1, w - w // 4)
        y0 = (i * h) // 3 + ((base >> (4 * i)) % max(1, h // 6))
        color = ((base >> i) % 256, (base >> (i + 8)) % 256, (base >> (i + 16)) % 256)
        d.ellipse([x0, y0, x0 + w // 4, y0 + h // 5], fill=color)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


async def _reset(request: web.Request, partial: bytes | None) -> web.StreamResponse:
    """Drop the connection with a TCP RST: at once, or after the headers and `partial` bytes of a
    body that claims to be longer (a transfer cut short)."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    if partial is not None:
        resp.content_length = len(partial) * 4
        await resp.prepare(request)
        await resp.write(partial)
        await asyncio.sleep(0.01)
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    raise asyncio.CancelledError  # nothing more is sent on this connection


async def serve(server: LocalServer, host: str, port: int) -> None:
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # the real port when port=0
    print(f"listening on http://{host}:{bound}/v1", flush=True)
    await asyncio.Event().wait()


@contextlib.contextmanager
def running(*args: str) -> Iterator[str]:
    """Start the server in a subprocess on a free port; yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "annotators.teacher.localserver", "--port", "0", *args],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"local server did not start: {line!r}")
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    p.add_argument("--api-key", help="require this bearer key (else any key is accepted)")
    p.add_argument("--no-json-schema", action="store_true", help="refuse json_schema output")
    p.add_argument("--max-image-side", type=int, default=4096)
    p.add_argument("--hang-s", type=float, default=3600.0)
    p.add_argument("--fault-rate", type=float, default=0.0,
                   help="share of request attempts that get a fault (seeded, see --fault-kinds)")
    p.add_argument("--fault-kinds", default=",".join(RATE_KINDS),
                   help=f"comma-separated kinds among {','.join(RATE_KINDS)}")
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument("--retry-after-s", type=float, default=1.0, help="Retry-After of injected 429s")
    a = p.parse_args(argv)
    kinds = tuple(k for k in a.fault_kinds.split(",") if k)
    if set(kinds) - set(RATE_KINDS) or not 0.0 <= a.fault_rate <= 1.0:
        p.error(f"--fault-kinds must be among {','.join(RATE_KINDS)} and --fault-rate in [0, 1]")
    server = LocalServer(a.latency, a.api_key, not a.no_json_schema, a.max_image_side, a.hang_s,
                         a.fault_rate, kinds, a.fault_seed, a.retry_after_s)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(server, a.host, a.port))


if __name__ == "__main__":
    main()
