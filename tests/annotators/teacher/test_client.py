"""The teacher client against a real local HTTP server speaking the OpenAI protocol: structured
output, fallback, repair, faults, bounded retries, shared cool-down, cache, limits, secrets."""

from __future__ import annotations

import asyncio
import time

import pytest
from PIL import Image

from annotators.teacher import (
    Endpoint,
    FatalTeacherError,
    Teacher,
    TeacherConfig,
    TeacherError,
    prompts,
)
from annotators.teacher.cache import ResponseCache, canonical, request_key
from annotators.teacher.limits import Bucket
from annotators.teacher.localserver import running
from annotators.teacher.outputs import ReflectOut, bands_model, strict_schema
from annotators.teacher.parse import parse_json_object
from tests.conftest import TEST_KEY


def _teacher(url: str, cache, key_env: str = "TWIG_TEST_KEY", **ep) -> Teacher:
    ep = {"base_url": url, "api_key_env": key_env, "timeout_s": 2.0, "max_retries": 2,
          "backoff_base_s": 0.05, **ep}
    return Teacher(TeacherConfig(model="test-model"), {"default": Endpoint(**ep)}, cache)


def _reflect_prompt(text: str) -> prompts.Prompt:
    return prompts.render(prompts.REFLECT, k=3, prompt=text, previous="(none yet)", band=1, y0=0,
                          y1=128, height=384, guide="a red cube", theta=90)


async def _ask_all(t: Teacher, texts: list[str]) -> list:
    image = Image.new("RGB", (384, 384), (200, 30, 30))
    try:
        return await asyncio.gather(*(t.ask("reflect", _reflect_prompt(x), ReflectOut, (image,))
                                      for x in texts), return_exceptions=True)
    finally:
        await t.aclose()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("TWIG_TEST_KEY", TEST_KEY)


def test_strict_schema_closes_every_object_and_inlines_refs():
    s = strict_schema(ReflectOut)
    assert "$defs" not in s and "$ref" not in str(s)
    assert s["additionalProperties"] is False and set(s["required"]) == set(s["properties"])
    crit = s["properties"]["criteria"]
    assert crit["additionalProperties"] is False and len(crit["required"]) == 5
    assert s["properties"]["score"] == {"description": "Overall 0-100 score of the band.",
                                        "maximum": 100, "minimum": 0, "type": "integer"}
    bands = strict_schema(bands_model(3))["properties"]["captions"]
    assert bands["minItems"] == bands["maxItems"] == 3


def test_tolerant_parsing():
    assert parse_json_object('{"a": 1}') == {"a": 1}
    assert parse_json_object('Sure:\n```json\n{"a": [1, 2,],}\n```') == {"a": [1, 2]}
    assert parse_json_object('The answer is {"a": "b } c"} hope it helps') == {"a": "b } c"}
    with pytest.raises(ValueError, match="no JSON object"):
        parse_json_object("I cannot do that.")


def test_cache_key_hashes_images_and_ignores_nothing_else():
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}]}]}
    canon = canonical(body)
    assert canon["messages"][0]["content"][0]["image_url"]["url"].startswith("sha256:")
    other = {**body, "temperature": 0.5}
    assert request_key("/chat/completions", body) != request_key("/chat/completions", other)
    assert request_key("/chat/completions", body) != request_key("/images/generations", body)


def test_answers_faults_and_bounded_retries(local_openai, tmp_path, key):
    t = _teacher(local_openai.url, str(tmp_path / "cache"), timeout_s=1.0)
    before = local_openai.stats()
    texts = ["a red cube", "a cat fault:429", "a dog fault:500", "a cup fault:hang",
             "a bird fault:malformed1", "a fox fault:malformed", "a car fault:length",
             "a tree fault:refusal", "a house fault:always500"]
    out = dict(zip(texts, asyncio.run(_ask_all(t, texts)), strict=True))
    after = local_openai.stats()
    for ok in texts[:5]:
        assert not isinstance(out[ok], Exception), (ok, out[ok])
        assert set(out[ok].data) == {"criteria", "score", "critique", "revised_guide"}
    assert out["a bird fault:malformed1"].spend.calls == 2  # the answer plus one repair
    reasons = {x: out[x].reason for x in texts[5:]}
    assert reasons["a fox fault:malformed"].startswith("invalid answer after one repair")
    assert reasons["a car fault:length"].startswith("truncated answer (finish_reason=length)")
    assert reasons["a tree fault:refusal"].startswith("refused: I'm sorry")
    assert reasons["a house fault:always500"] == "gave up after 3 attempts: HTTP 500: The server " \
        "had an error while processing your request."
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert grew["fault_always500"] == 3  # max_retries=2: three attempts, no more
    assert grew["fault_429"] == 3 and grew["fault_500"] == 2 and grew["fault_hang"] == 2
    assert t.counters["retries"] == 2 + 1 + 1 + 2


def test_429_retry_after_is_one_shared_cool_down(local_openai, tmp_path, key):
    t = _teacher(local_openai.url, None, max_retries=3)
    start = time.monotonic()
    out = asyncio.run(_ask_all(t, [f"object {i} fault:429" for i in range(20)]))
    took = time.monotonic() - start
    assert not any(isinstance(x, Exception) for x in out)
    assert took >= 2.0  # Retry-After: 1 honoured twice
    assert took < 6.0   # and shared: twenty requests cooled down together, not one after another
    assert t.counters["requests"] == 60  # exactly 2 refusals + 1 answer each: no retry storm


def test_second_ask_is_served_from_cache(local_openai, tmp_path, key):
    cache = tmp_path / "cache"
    first = asyncio.run(_ask_all(_teacher(local_openai.url, str(cache)), ["a cube", "a ball"]))
    n = local_openai.requests()
    t = _teacher(local_openai.url, str(cache))
    again = asyncio.run(_ask_all(t, ["a cube", "a ball"]))
    assert local_openai.requests() == n and t.counters["cache_hits"] == 2
    assert [r.data for r in again] == [r.data for r in first]
    assert [r.spend for r in again] == [r.spend for r in first]  # usage is the cached response's
    assert len(ResponseCache(cache)) == 2


def test_fallback_when_json_schema_is_refused(tmp_path, key):
    with running("--no-json-schema") as url:
        t = _teacher(url, str(tmp_path / "cache"))
        out = asyncio.run(_ask_all(t, ["a cube", "a ball"]))
        assert not any(isinstance(x, Exception) for x in out), out
        assert t.client("default").mode == "json_object"
        t2 = _teacher(url, str(tmp_path / "cache"), structured_output="text")
        assert not any(isinstance(x, Exception) for x in asyncio.run(_ask_all(t2, ["a cup"])))
        t3 = _teacher(url, None, fallback="none")
        (err,) = asyncio.run(_ask_all(t3, ["a hat"]))
        assert isinstance(err, TeacherError) and "HTTP 400" in err.reason and "json_schema" in err.reason


def test_wrong_key_is_fatal_and_never_shown(local_openai, tmp_path, monkeypatch):
    monkeypatch.setenv("TWIG_TEST_KEY", "sk-wrong-9f8e7d6c5b4a39281706")
    t = _teacher(local_openai.url, None)
    (err,) = asyncio.run(_ask_all(t, ["a cube"]))
    assert isinstance(err, FatalTeacherError)
    assert "TWIG_TEST_KEY" in str(err) and "9f8e" not in str(err) and "1706" not in str(err)
    monkeypatch.delenv("TWIG_TEST_KEY")
    with pytest.raises(FatalTeacherError, match="no API key"):
        Teacher(TeacherConfig(model="m"), {"default": Endpoint(api_key_env="TWIG_TEST_KEY")}, None) \
            .check(["reflect"])


def test_bucket_keeps_the_rate():
    async def take(n: int) -> float:
        b = Bucket(per_minute=1200)  # 20/s, bursts of 200
        t0 = time.monotonic()
        for _ in range(n):
            await b.take(1)
        return time.monotonic() - t0

    assert asyncio.run(take(200)) < 0.5
    assert asyncio.run(take(230)) >= 1.3
