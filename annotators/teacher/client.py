"""The teacher client: OpenAI-compatible chat and image requests with limits, retries and a cache.

`Teacher.ask()` sends one role's request (structured output, with a fallback for endpoints that
lack `json_schema`, tolerant parsing and one repair round) and returns the validated answer with
what it cost. Every response, fresh or cached, is parsed after the cache, so a re-run on the same
input makes zero requests. A request that exhausts its retries raises `TeacherError` (the record
becomes a reject); an authentication or unknown-model error raises `FatalTeacherError` (the run
stops: every other request would fail the same way).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from pydantic import BaseModel, ValidationError

from annotators.teacher import prompts
from annotators.teacher.cache import ResponseCache, request_key
from annotators.teacher.limits import Limits
from annotators.teacher.outputs import strict_schema
from annotators.teacher.parse import parse_json_object
from annotators.teacher.settings import Endpoint, TeacherConfig

log = logging.getLogger("twig.teacher")

LIVE_COUNTERS = ("requests", "cache_hits", "retries", "errors", "tokens", "cost")
_DETERMINISTIC = (400, 413, 422)  # the same request gets the same refusal: cached like an answer


class TeacherError(Exception):
    """This record's request failed for good; the message is the reject reason."""

    def __init__(self, reason: str, spend: Spend | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.spend = spend or Spend()


class FatalTeacherError(RuntimeError):
    """Every request would fail the same way (bad key, unknown model): stop the run."""

    fatal = True


@dataclass
class Spend:
    """Responses used (fresh or cached) and what they cost: deterministic for the same input."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    cost: float = 0.0

    def add(self, other: Spend) -> Spend:
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.images += other.images
        self.cost += other.cost
        return self


@dataclass
class Reply:
    data: dict[str, Any]
    spend: Spend
    model: str


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (a faster loop: the client is CPU-bound on small machines)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def redact(text: str, secrets: list[str]) -> str:
    """Remove keys from text that may reach a log or a reject reason."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    text = re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)
    return re.sub(r"\b(sk|key|api)[-_][A-Za-z0-9_\-*]{6,}", r"\1-***", text)


def image_data_url(image: Image.Image, max_side: int) -> str:
    """A JPEG data URL of the image, downscaled so its longer side is at most max_side."""
    im = image.convert("RGB")
    if max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                       Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, optimize=False, progressive=False, subsampling=0)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, when.timestamp() - time.time()) if when else None


def _no_answer(e: Exception, timeout_s: float) -> str:
    """Why a request got no answer: a timeout, or the connection failing (reset, cut short).
    openai's aiohttp transport reports every aiohttp connection error as a timeout (it maps
    `ClientConnectionError` to `httpx.ConnectTimeout`), so the cause chain decides."""
    import aiohttp
    import openai

    causes: list[BaseException] = []
    x = e.__cause__
    while x is not None and len(causes) < 10:
        causes.append(x)
        x = x.__cause__ or x.__context__
    lost = [c for c in causes if isinstance(c, (OSError, aiohttp.ClientConnectionError))]
    timed_out = any(isinstance(c, TimeoutError) for c in causes)
    if timed_out or (not lost and isinstance(e, openai.APITimeoutError)):
        return f"timed out after {timeout_s:g}s"
    return f"connection error ({type((lost or causes or [e])[-1]).__name__})"


def _error_message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return fallback


class EndpointClient:
    """One endpoint: its openai client, limits (this process's share of them) and the cache."""

    def __init__(self, name: str, ep: Endpoint, cache: ResponseCache | None, share: float,
                 counters: dict[str, float]) -> None:
        self.name, self.ep, self.cache, self.counters = name, ep, cache, counters
        self.limits = Limits(math.ceil(ep.concurrency * share),
                             ep.requests_per_minute * share if ep.requests_per_minute else None,
                             ep.tokens_per_minute * share if ep.tokens_per_minute else None)
        self.mode = ep.structured_output
        self._client = None
        self._key = (os.environ.get(ep.api_key_env) or "").strip()  # not a pasted newline
        self._unanswered = 0  # requests in a row that gave up with no answer at all

    @property
    def base_url(self) -> str | None:
        return self.ep.base_url or os.environ.get("OPENAI_BASE_URL") or None

    def check(self) -> None:
        if not self._key and not self.base_url:
            raise FatalTeacherError(
                f"endpoint {self.name!r}: no API key: set ${self.ep.api_key_env} "
                "(or point base_url / $OPENAI_BASE_URL at a server that needs none)")
        if self._key and not re.fullmatch(r"[\x21-\x7e]+", self._key):  # never echo the key
            raise FatalTeacherError(
                f"endpoint {self.name!r}: ${self.ep.api_key_env} holds characters an HTTP header "
                "cannot carry (spaces, control or non-ASCII characters): check that the key was "
                "copied whole and alone")

    def _openai(self):
        if self._client is None:
            import openai

            self._client = openai.AsyncOpenAI(
                api_key=self._key or "EMPTY", base_url=self.base_url, max_retries=0,
                timeout=self.ep.timeout_s, http_client=openai.DefaultAioHttpClient())
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def fetch(self, path: str, body: dict[str, Any], est_tokens: int) -> tuple[dict, bool]:
        """The cached entry for this request, or a fresh one (then cached). An entry is
        {"status": 200, "body": <response JSON>} or {"status": 4xx, "error": <message>}."""
        key = request_key(path, body)
        entry = self.cache.get(key) if self.cache is not None else None
        if entry is not None:
            self.counters["cache_hits"] += 1
            return entry, True
        entry = await self._send(path, body, est_tokens)
        if self.cache is not None:
            self.cache.put(key, entry)
        return entry, False

    async def _send(self, path: str, body: dict[str, Any], est_tokens: int) -> dict:
        import httpx2
        import openai

        ep, last = self.ep, "no attempt"
        answered = False
        for attempt in range(ep.max_retries + 1):
            wait = None
            async with self.limits.slot(est_tokens):
                self.counters["requests"] += 1
                try:
                    resp = await self._openai().post(path, body=body, cast_to=httpx2.Response)
                    data = json.loads(resp.content)
                    if not isinstance(data, dict):
                        raise ValueError("not a JSON object")
                    used = data.get("usage") or {}
                    actual = int(used.get("total_tokens") or 0)
                    self.limits.settle(est_tokens, actual or est_tokens)
                    self._unanswered = 0
                    return {"status": 200, "body": data}
                except openai.APIConnectionError as e:  # APITimeoutError included
                    last = _no_answer(e, ep.timeout_s)
                except openai.APIStatusError as e:
                    status = e.status_code
                    answered = True
                    self._unanswered = 0
                    msg = redact(_error_message(e.body, e.response.reason_phrase or ""), [self._key])[:300]
                    if status in (401, 403):
                        raise FatalTeacherError(
                            f"endpoint {self.name!r} refused the API key (HTTP {status}): check "
                            f"${ep.api_key_env}") from None
                    if status == 404:
                        raise FatalTeacherError(
                            f"endpoint {self.name!r}: HTTP 404 for {path} with model "
                            f"{body.get('model')!r}: {msg}") from None
                    if status in _DETERMINISTIC:
                        return {"status": status, "error": msg}
                    last = f"HTTP {status}: {msg}"
                    if status == 429:
                        wait = _retry_after(e.response.headers)
                        self.limits.cool_down(wait if wait is not None else self._backoff(attempt))
                except ValueError as e:
                    last = f"unreadable response body ({e})"
                    answered = True
            self.counters["errors"] += 1
            if attempt < ep.max_retries:
                self.counters["retries"] += 1
                delay = self._backoff(attempt)
                await asyncio.sleep(max(delay, wait or 0.0))
        if not answered:
            self._unanswered += 1
            if ep.unreachable_after and self._unanswered >= ep.unreachable_after:
                raise FatalTeacherError(
                    f"endpoint {self.name!r} ({self.base_url or 'api.openai.com'}) is unreachable: "
                    f"{self._unanswered} requests in a row got no answer ({last}); the samples "
                    "finished so far are kept, run again once it is back") from None
        raise TeacherError(f"gave up after {ep.max_retries + 1} attempts: {last}")

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter in [base*2^a / 2, base*2^a], capped."""
        cap = min(self.ep.backoff_max_s, self.ep.backoff_base_s * 2 ** attempt)
        return cap * (0.5 + random.random() / 2)


@dataclass
class Teacher:
    """All roles of one run; one `EndpointClient` per endpoint, shared by every role using it."""

    config: TeacherConfig
    endpoints: dict[str, Endpoint]
    cache_dir: str | None
    share: float = 1.0
    counters: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LIVE_COUNTERS, 0.0))
    _clients: dict[str, EndpointClient] = field(default_factory=dict)

    def client(self, name: str) -> EndpointClient:
        if name not in self._clients:
            if name not in self.endpoints:
                raise FatalTeacherError(f"no endpoint named {name!r} in the config's endpoints")
            cache = ResponseCache(self.cache_dir) if self.cache_dir else None
            self._clients[name] = EndpointClient(name, self.endpoints[name], cache, self.share,
                                                 self.counters)
        return self._clients[name]

    def check(self, roles: list[str]) -> None:
        """Fail before any work when a role has no model or its endpoint has no key."""
        for role in roles:
            if role != "image":
                try:
                    self.config.chat_model(role)
                except ValueError as e:
                    raise FatalTeacherError(str(e)) from None
            self.client(self.config.endpoint_of(role)).check()

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()

    def _spend(self, model: str, body: dict, images: int = 0) -> Spend:
        u = body.get("usage") or {}
        pt = int(u.get("prompt_tokens") or u.get("input_tokens") or 0)
        ct = int(u.get("completion_tokens") or u.get("output_tokens") or 0)
        return Spend(1, pt, ct, images, self.config.cost(model, pt, ct, images))

    def _book(self, model: str, entry: dict, cached: bool, spend: Spend, images: int = 0) -> None:
        """Add a used response to the record's spend; a fresh one also to the live counters."""
        s = self._spend(model, entry["body"], images)
        spend.add(s)
        if not cached:
            self.counters["tokens"] += s.prompt_tokens + s.completion_tokens
            self.counters["cost"] += s.cost

    async def ask(self, role: str, prompt: prompts.Prompt, output: type[BaseModel],
                  images: tuple[Image.Image, ...] = ()) -> Reply:
        """One role's answer, validated against `output`."""
        cfg = getattr(self.config, role)
        model = self.config.chat_model(role)
        client = self.client(cfg.endpoint)
        content: Any = prompt.user
        if images:
            content = [{"type": "text", "text": prompt.user}]
            for im in images:
                part: dict[str, Any] = {"url": image_data_url(im, self.config.image_max_side)}
                if self.config.image_detail:
                    part["detail"] = self.config.image_detail
                content.append({"type": "image_url", "image_url": part})
        schema = strict_schema(output)
        spend = Spend()
        while True:
            mode = client.mode
            system = prompt.system
            if mode != "json_schema":
                system += "\n\n" + prompts.render(prompts.JSON_INSTRUCTIONS,
                                                  schema=json.dumps(schema)).user
            messages = [{"role": "system", "content": system}, {"role": "user", "content": content}]
            body = self._chat_body(cfg, model, mode, output.__name__, schema, messages)
            entry = await self._fetch(client, body, model, images, spend)
            if entry["status"] != 200 and mode == "json_schema" and client.ep.fallback != "none":
                if client.mode == "json_schema":
                    log.warning("endpoint %r refused json_schema output (%s); falling back to %s",
                                client.name, entry.get("error", "")[:120], client.ep.fallback)
                    client.mode = client.ep.fallback
                continue
            break
        for repair in (False, True):
            if entry["status"] != 200:
                raise TeacherError(f"HTTP {entry['status']}: {entry.get('error', '')}", spend)
            text = self._answer_text(entry["body"], spend)
            try:
                data = output.model_validate(parse_json_object(text)).model_dump(mode="json")
                return Reply(data, spend, model)
            except (ValueError, ValidationError) as e:
                error = _short_error(e)
                if repair:
                    raise TeacherError(f"invalid answer after one repair: {error}", spend) from None
            fix = prompts.render(prompts.REPAIR, error=error).user
            body = dict(body, messages=[*messages, {"role": "assistant", "content": text},
                                        {"role": "user", "content": fix}])
            entry = await self._fetch(client, body, model, images, spend)
        raise AssertionError("unreachable")

    def _chat_body(self, cfg, model: str, mode: str, name: str, schema: dict, messages: list) -> dict:
        body: dict[str, Any] = {"model": model, "messages": messages}
        if cfg.temperature is not None:
            body["temperature"] = cfg.temperature
        if cfg.top_p is not None:
            body["top_p"] = cfg.top_p
        if cfg.seed is not None:
            body["seed"] = cfg.seed
        body[self.client(cfg.endpoint).ep.max_tokens_param] = cfg.max_tokens
        if mode == "json_schema":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": name, "schema": schema, "strict": True}}
        elif mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        body.update(cfg.extra)
        return body

    async def _fetch(self, client: EndpointClient, body: dict, model: str, images: tuple,
                     spend: Spend) -> dict:
        text_chars = sum(len(m["content"]) if isinstance(m["content"], str) else
                         sum(len(p.get("text", "")) for p in m["content"]) for m in body["messages"])
        est = text_chars // 4 + 800 * len(images) + int(body.get(client.ep.max_tokens_param, 0))
        try:
            entry, cached = await client.fetch("/chat/completions", body, est)
        except TeacherError as e:
            e.spend = spend
            raise
        if entry["status"] == 200:
            self._book(model, entry, cached, spend)
        return entry

    @staticmethod
    def _answer_text(body: dict, spend: Spend) -> str:
        try:
            choice = body["choices"][0]
            message = choice.get("message") or {}
        except (KeyError, IndexError, TypeError):
            raise TeacherError("response has no choices", spend) from None
        if message.get("refusal"):
            raise TeacherError(f"refused: {' '.join(str(message['refusal']).split())[:160]}", spend)
        finish = choice.get("finish_reason")
        if finish == "length":
            raise TeacherError("truncated answer (finish_reason=length): raise max_tokens", spend)
        if finish == "content_filter":
            raise TeacherError("answer withheld by the endpoint's content filter", spend)
        text = message.get("content")
        if not isinstance(text, str) or not text.strip():
            raise TeacherError("empty answer", spend)
        return text

    async def draw(self, prompt: str) -> tuple[bytes, Spend]:
        """One image from the image role (OpenAI `images.generate`, base64 output)."""
        cfg = self.config.image
        client = self.client(cfg.endpoint)
        body: dict[str, Any] = {"model": cfg.model, "prompt": prompt, "n": 1, "size": cfg.size}
        if cfg.quality:
            body["quality"] = cfg.quality
        if cfg.response_format_field():
            body["response_format"] = cfg.response_format_field()
        body.update(cfg.extra)
        spend = Spend()
        entry, cached = await client.fetch("/images/generations", body, len(prompt) // 4 + 1000)
        if entry["status"] != 200:
            raise TeacherError(f"image request refused (HTTP {entry['status']}): {entry.get('error', '')}")
        self._book(cfg.model, entry, cached, spend, images=1)
        try:
            item = entry["body"]["data"][0]
        except (KeyError, IndexError, TypeError):
            raise TeacherError("image response has no data", spend) from None
        if not item.get("b64_json"):
            why = "a URL instead of base64" if item.get("url") else "no image"
            raise TeacherError(f"image response holds {why}: set teacher.image.response_format "
                               "to b64_json", spend)
        try:
            return base64.b64decode(item["b64_json"], validate=True), spend
        except ValueError:
            raise TeacherError("image response is not valid base64", spend) from None


def _short_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, x['loc'])) or 'answer'}: {x['msg']}"
                         for x in e.errors()[:3])
    return str(e)[:200]
