"""judge: a teacher MLLM scores how faithfully each image shows its prompt (0-100, returned /100).

The reward asks through the pipeline's own teacher client (`annotators.teacher.Teacher`), with the
pipeline's judge prompt (`judge.v1`) and answer schema (`JudgeOut`), so it has the same retries and
backoff, rate and concurrency limits, 429 cool-down, structured output with its fallbacks, tolerant
parsing with one repair round, and key handling: the key is read from the environment variable the
endpoint names and never leaves the client (not in `describe()`, not in an error).

Settings are the teacher's own pydantic types: the constructor builds one `Endpoint` (where and how
fast to call) and a `TeacherConfig` whose `judge` role (`ChatRole`) holds what shapes the answer;
`from_settings` takes those objects directly, e.g. from a pipeline config.

`score()` is synchronous. The async client runs on an event loop of the reward's own, in a daemon
thread started on first use and kept for the reward's life, so repeated calls share connections and
the endpoint's 429 cool-down, and calling from a thread that already runs an event loop is safe (it
blocks that thread until the scores are in). `close()` (or the garbage collector, or interpreter
exit) stops it; a pickled reward carries only its settings and starts a fresh loop where it lands.

No response cache by default: a rollout image is new every step, so a cache would only grow. Pass
`cache_dir` to get the teacher's on-disk cache (keyed on the request, images by their bytes' hash),
which pays off when the same images are judged again, as in a re-run evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from annotators.teacher import (
    ChatRole,
    Endpoint,
    FatalTeacherError,
    Spend,
    Teacher,
    TeacherConfig,
    TeacherError,
    new_event_loop,
    prompts,
)
from annotators.teacher.client import redact
from annotators.teacher.outputs import JudgeOut
from trainer.rewards.base import RewardError, Sample

BACKEND = "openai-compatible"
ENDPOINT = "judge"  # the name of the reward's one endpoint inside its Teacher
DEFAULT_API_KEY_ENV: str = Endpoint.model_fields["api_key_env"].default

# Keyword settings and the settings object each one goes to.
_ENDPOINT_KEYS = frozenset(Endpoint.model_fields) - {"base_url", "api_key_env", "concurrency"}
_ROLE_KEYS = frozenset(ChatRole.model_fields) - {"endpoint", "model"}
_CONFIG_KEYS = frozenset({"image_max_side", "image_detail"})


class JudgeReward:
    """Scores each sample with one judge request to an OpenAI-compatible teacher; score/100."""

    name = "judge"

    def __init__(self, model: str, base_url: str | None = None,
                 api_key_env: str = DEFAULT_API_KEY_ENV, concurrency: int = 8,
                 cache_dir: str | None = None, **settings: Any) -> None:
        """`settings` are any other field of `Endpoint` (timeout_s, max_retries, backoff_base_s,
        requests_per_minute, structured_output, fallback, max_tokens_param, ...), of the judge
        `ChatRole` (temperature, top_p, max_tokens, seed, extra) or of `TeacherConfig`
        (image_max_side, image_detail). `base_url` defaults to $OPENAI_BASE_URL, else OpenAI's."""
        unknown = sorted(set(settings) - _ENDPOINT_KEYS - _ROLE_KEYS - _CONFIG_KEYS)
        if unknown:
            known = ", ".join(sorted(_ENDPOINT_KEYS | _ROLE_KEYS | _CONFIG_KEYS))
            raise RewardError(f"judge: unknown setting(s) {', '.join(unknown)}; known: {known}")

        def pick(keys: frozenset[str]) -> dict[str, Any]:
            return {k: v for k, v in settings.items() if k in keys}

        defaults = TeacherConfig().judge.model_dump()  # the pipeline's judge: temperature 0, 256
        try:
            endpoint = Endpoint(base_url=base_url, api_key_env=api_key_env,
                                concurrency=concurrency, **pick(_ENDPOINT_KEYS))
            role = ChatRole(**{**defaults, **pick(_ROLE_KEYS), "endpoint": ENDPOINT})
            config = TeacherConfig(model=model, judge=role, **pick(_CONFIG_KEYS))
        except ValidationError as e:
            msg = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise RewardError(f"judge: invalid settings: {msg}") from None
        self._setup(config, endpoint, cache_dir)

    @classmethod
    def from_settings(cls, config: TeacherConfig, endpoint: Endpoint,
                      cache_dir: str | None = None) -> JudgeReward:
        """The reward for a teacher config's judge role (its model, generation parameters and
        image settings) sending to `endpoint`, e.g. `cfg.endpoints[cfg.teacher.judge.endpoint]`."""
        self = cls.__new__(cls)
        self._setup(config, endpoint, cache_dir)
        return self

    def _setup(self, config: TeacherConfig, endpoint: Endpoint, cache_dir: str | None) -> None:
        if config.judge.endpoint != ENDPOINT:
            config = config.model_copy(
                update={"judge": config.judge.model_copy(update={"endpoint": ENDPOINT})})
        # Freeze the URL now (as the pipeline's runner does), so describe() tells what is used.
        url = endpoint.base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.config, self.endpoint = config, endpoint.model_copy(update={"base_url": url})
        try:
            self.model = config.chat_model("judge")
        except ValueError as e:  # no model named
            raise RewardError(f"judge: {e}") from None
        self.cache_dir = cache_dir
        self.spend = Spend()  # every judge response used so far (calls, tokens, cost)
        self._lock = threading.Lock()
        self._runtime: _Runtime | None = None
        self._finalizer: weakref.finalize | None = None
        try:  # fail at build time, not mid-training, when there is no key to send
            self._teacher().check(["judge"])
        except FatalTeacherError as e:
            raise RewardError(f"judge: {e}") from None

    def _teacher(self) -> Teacher:
        return Teacher(self.config, {ENDPOINT: self.endpoint}, self.cache_dir)

    # ---- scoring -------------------------------------------------------------------------------

    def score(self, samples: list[Sample]) -> list[float]:
        """One judge request per sample, all in flight at once up to `concurrency`; in order."""
        if not samples:
            return []
        runtime = self._start()
        future = asyncio.run_coroutine_threadsafe(self._judge_all(runtime.teacher, samples),
                                                  runtime.loop)
        try:
            results = future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt: stop sending this batch's requests
            raise
        return self._collect(results)

    async def _judge_all(self, teacher: Teacher, samples: list[Sample]) -> list:
        async def one(s: Sample) -> tuple[float, Spend]:
            prompt = prompts.render(prompts.JUDGE, prompt=s.prompt)
            try:
                reply = await teacher.ask("judge", prompt, JudgeOut, (s.image,))
            except TeacherError as e:
                self.spend.add(e.spend)
                raise
            self.spend.add(reply.spend)
            return reply.data["score"] / 100.0, reply.spend

        return await asyncio.gather(*(one(s) for s in samples), return_exceptions=True)

    def _collect(self, results: list) -> list[float]:
        failed = [r for r in results if isinstance(r, BaseException)]
        if not failed:
            return [float(r[0]) for r in results]
        fatal = next((e for e in failed if isinstance(e, FatalTeacherError)), None)
        if fatal is not None:  # every request fails the same way (bad key, unknown model)
            why = str(fatal)
        else:
            reasons = Counter(e.reason if isinstance(e, TeacherError)
                              else f"{type(e).__name__}: {e}" for e in failed)
            why = "; ".join(f"{n}x {r}" if n > 1 else r for r, n in reasons.most_common(3))
            if len(reasons) > 3:
                why += f"; and {len(reasons) - 3} other reason(s)"
        secret = os.environ.get(self.endpoint.api_key_env) or ""
        why = redact(why, [secret])
        raise RewardError(f"judge: {len(failed)} of {len(results)} samples failed "
                          f"(model {self.model!r}): {why}")

    # ---- provenance ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What produced the scores: backend, model, endpoint host, prompt version and the
        parameters that shape the answer. Never the key (only the name of its variable)."""
        role = self.config.judge
        return {
            "name": self.name, "backend": BACKEND, "model": self.model,
            "base_url_host": _host(self.endpoint.base_url), "api_key_env": self.endpoint.api_key_env,
            "prompt_version": prompts.JUDGE, "output": JudgeOut.__name__,
            "temperature": role.temperature, "top_p": role.top_p, "max_tokens": role.max_tokens,
            "seed": role.seed, "image_max_side": self.config.image_max_side,
            "image_detail": self.config.image_detail,
            "structured_output": self.endpoint.structured_output,
            "concurrency": self.endpoint.concurrency, "cache": self.cache_dir is not None,
        }

    # ---- the event loop ------------------------------------------------------------------------

    def _start(self) -> _Runtime:
        with self._lock:
            if self._runtime is None or not self._runtime.alive():
                if self._finalizer is not None:
                    self._finalizer()  # what is left of a loop that died
                self._runtime = _Runtime(self._teacher())
                # Stops the loop when the reward is collected or the interpreter exits; it holds
                # the runtime, not the reward.
                self._finalizer = weakref.finalize(self, self._runtime.stop)
            return self._runtime

    def close(self) -> None:
        """Close the connections and stop the loop thread; a later `score()` starts new ones."""
        with self._lock:
            finalizer, self._runtime, self._finalizer = self._finalizer, None, None
        if finalizer is not None:
            finalizer()  # runs the runtime's stop() once

    def __enter__(self) -> JudgeReward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "endpoint": self.endpoint, "cache_dir": self.cache_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._setup(state["config"], state["endpoint"], state["cache_dir"])

    def __repr__(self) -> str:
        return f"JudgeReward(model={self.model!r}, host={_host(self.endpoint.base_url)!r})"


class _Runtime:
    """A Teacher and the event loop it lives on, run by a daemon thread."""

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="judge-reward",
                                       daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive() and not self.loop.is_closed()

    def stop(self) -> None:
        if not self.alive():
            return
        if threading.current_thread() is self.thread:  # collected on the loop itself: no waiting
            self.loop.call_soon(self.loop.stop)
            return
        with contextlib.suppress(Exception):  # closing must not raise at exit
            asyncio.run_coroutine_threadsafe(self.teacher.aclose(), self.loop).result(10)
        for client in self.teacher._clients.values():  # the Teacher closes its HTTP clients only
            if client.cache is not None:
                client.cache.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


def _host(url: str | None) -> str:
    """The host (and port) of a base URL, without user info, path or query."""
    if not url:
        return "api.openai.com"
    parts = urlsplit(url if "//" in url else f"//{url}")
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host
