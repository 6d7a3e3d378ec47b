"""The judge reward against `annotators.teacher.localserver`: a real HTTP server on 127.0.0.1 that
speaks the OpenAI chat-completions protocol (the stand-in for a remote teacher API), requiring a
bearer key, with fault injection by a `fault:<name>` marker in the request text (here: the prompt).
Its answers are deterministic in the request's text and images, as a temperature-0 model's are."""

from __future__ import annotations

import asyncio
import json
import pickle
import time

import pytest
from PIL import Image

from annotators.teacher import ChatRole, Endpoint, TeacherConfig
from annotators.teacher.localserver import running
from tests.conftest import TEST_KEY
from trainer.rewards.base import RewardError, Sample
from trainer.rewards.judge import JudgeReward

KEY_ENV = "TWIG_JUDGE_TEST_KEY"
WRONG_KEY = "sk-wrong-6d1e8b3a7c2f9e0d4b5a"
FAST = {"timeout_s": 5.0, "max_retries": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.2}


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, TEST_KEY)


def _reward(url: str, **kw) -> JudgeReward:
    return JudgeReward("judge-model", base_url=url, api_key_env=KEY_ENV, **{**FAST, **kw})


def _samples(prompts: list[str]) -> list[Sample]:
    out = []
    for i, p in enumerate(prompts):
        im = Image.new("RGB", (96, 96), (40 * i % 256, 200 - 20 * i, 90))
        im.paste((255, 255, 255), (10 + 5 * i, 20, 40 + 5 * i, 60))
        out.append(Sample(prompt=p, image=im, category="color"))
    return out


def _key_parts(message: str, *keys: str, width: int = 5) -> list[str]:
    """Every run of `width` characters of a key that shows in the message."""
    return [k[i:i + width] for k in keys for i in range(len(k) - width + 1)
            if k[i:i + width] in message]


def test_scores_n_images_in_order(local_openai, key):
    samples = _samples([f"{n} red cubes left of a blue sphere" for n in range(1, 7)])
    with _reward(local_openai.url) as reward:
        before = local_openai.stats()
        scores = reward.score(samples)
        assert len(scores) == 6 and all(isinstance(s, float) and 0 <= s <= 1 for s in scores)
        assert len(set(scores)) > 1  # the samples are told apart
        # The batch's order is the samples' order: each alone gets the score it got in the batch
        # (and repeated calls on one reward reuse its loop and connections).
        assert [reward.score([s])[0] for s in samples] == scores
        after = local_openai.stats()
        assert after["chat"] - before.get("chat", 0) == 12
        assert after["images_checked"] - before.get("images_checked", 0) == 12
        assert reward.spend.calls == 12 and reward.spend.prompt_tokens > 0
    assert reward.score([]) == []


def test_server_fault_is_retried_and_still_scores(local_openai, key):
    reward = _reward(local_openai.url)
    before = local_openai.stats().get("fault_500", 0)
    scores = reward.score(_samples(["a green cat fault:500", "a yellow dog", "fault:500 two owls"]))
    assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)
    assert local_openai.stats()["fault_500"] - before == 4  # each faulty one: a 500, then an answer
    reward.close()


def test_failure_after_retries_names_count_and_reason(local_openai, key):
    reward = _reward(local_openai.url, max_retries=1)
    samples = _samples(["a red kite fault:always500", "a blue kite", "a tan kite fault:always500"])
    with pytest.raises(RewardError) as err:
        reward.score(samples)
    msg = str(err.value)
    assert "2 of 3 samples failed" in msg and "gave up after 2 attempts" in msg and "HTTP 500" in msg
    assert not _key_parts(msg, TEST_KEY)
    # The reward is still usable afterwards.
    assert len(reward.score(samples[1:2])) == 1
    reward.close()


def test_wrong_key_raises_without_showing_any_key(local_openai, monkeypatch):
    monkeypatch.setenv(KEY_ENV, WRONG_KEY)
    reward = _reward(local_openai.url)
    with pytest.raises(RewardError) as err:
        reward.score(_samples(["a purple umbrella", "a grey train"]))
    msg = str(err.value)
    assert "2 of 2 samples failed" in msg and "HTTP 401" in msg and KEY_ENV in msg
    assert not _key_parts(msg, WRONG_KEY, TEST_KEY), msg
    reward.close()


def test_describe_holds_no_key(local_openai, key):
    reward = _reward(local_openai.url, temperature=0.0, max_tokens=200)
    d = reward.describe()
    port = local_openai.url.split(":")[2].split("/")[0]
    assert d["name"] == reward.name == "judge" and d["backend"] == "openai-compatible"
    assert d["model"] == "judge-model" and d["prompt_version"] == "judge.v1"
    assert d["base_url_host"] == f"127.0.0.1:{port}" and d["api_key_env"] == KEY_ENV
    assert d["max_tokens"] == 200 and d["temperature"] == 0.0
    assert not _key_parts(json.dumps(d), TEST_KEY)
    assert not _key_parts(repr(reward), TEST_KEY)


def test_from_settings_and_from_inside_an_event_loop(local_openai, key):
    config = TeacherConfig(model="teacher-model", judge=ChatRole(temperature=0.0, max_tokens=128,
                                                                 endpoint="remote"))
    reward = JudgeReward.from_settings(config, Endpoint(base_url=local_openai.url,
                                                        api_key_env=KEY_ENV, **FAST))
    assert reward.describe()["model"] == "teacher-model" and reward.describe()["max_tokens"] == 128

    async def trainer_step() -> list[float]:  # a caller that already runs an event loop
        return reward.score(_samples(["a white swan", "a black swan"]))

    assert len(asyncio.run(trainer_step())) == 2
    reward.close()


def test_user_info_in_the_url_is_not_described(key):
    reward = JudgeReward("m", base_url="https://user:secret-token@judge.example.com:8443/v1",
                         api_key_env=KEY_ENV)
    d = reward.describe()
    assert d["base_url_host"] == "judge.example.com:8443" and "secret" not in json.dumps(d)


def test_settings_are_checked_when_built(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(RewardError, match=f"no API key: set \\${KEY_ENV}"):
        JudgeReward("m", api_key_env=KEY_ENV)
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    with pytest.raises(RewardError, match="model is not set"):
        JudgeReward("", api_key_env=KEY_ENV)
    with pytest.raises(RewardError, match="unknown setting"):
        JudgeReward("m", api_key_env=KEY_ENV, temprature=0.5)
    with pytest.raises(RewardError, match="temperature"):
        JudgeReward("m", api_key_env=KEY_ENV, temperature=5)
    with pytest.raises(RewardError, match="concurrency"):
        JudgeReward("m", api_key_env=KEY_ENV, concurrency=0)
    # Values from a spec string arrive as text; the settings types coerce them.
    r = JudgeReward("m", api_key_env=KEY_ENV, concurrency="4", max_retries="1", seed="7")
    assert r.endpoint.concurrency == 4 and r.endpoint.max_retries == 1 and r.config.judge.seed == 7


def test_requests_run_concurrently_cache_and_pickle(key, tmp_path):
    samples = _samples([f"a lamp number {i}" for i in range(8)])
    with running("--api-key", TEST_KEY, "--latency", "0.4") as url:
        reward = _reward(url, concurrency=8, cache_dir=str(tmp_path / "cache"))
        t0 = time.monotonic()
        scores = reward.score(samples)
        assert time.monotonic() - t0 < 2.0  # 8 x 0.4 s one after another would be 3.2 s
        clone = pickle.loads(pickle.dumps(reward))  # settings travel; the loop does not
        reward.close()
        assert clone.describe() == reward.describe()
        t0 = time.monotonic()
        assert clone.score(samples) == scores  # from the cache: no request, no latency
        assert time.monotonic() - t0 < 0.3
        clone.close()
