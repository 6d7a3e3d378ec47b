"""The TwiG sampler on a tiny random Janus (CPU): exactness against transformers, log-probs,
batch invariance, reflection-driven redraws and both layouts."""

from __future__ import annotations

import pytest
import torch

from generator.choice import Sampling, choose, filter_logits, uniform
from generator.model import tiny_model
from generator.sampler import Request, TwigSampler, TwigSettings
from generator.scoring import sequence_logps

torch.set_num_threads(1)

PROMPTS = ["a red cat", "two blue sofas on a green lawn under a cloudy sky", "a tiny yellow bird"]
HIGH = [" score 95; revised guide: keep it", " score 97; revised guide: keep it", " score 99; revised guide: fine"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=1)


def fast(**kw) -> TwigSettings:
    base = dict(guide_tokens=6, reflect_tokens=6, image=Sampling(1.0, top_k=32),
                text=Sampling(1.0, top_p=0.9))
    return TwigSettings(**(base | kw))


def test_k1_greedy_equals_transformers_generate(tiny):
    """K=1, no guides, no reflection, greedy: token for token what generate(generation_mode='image')
    draws, for a left-padded batch of prompts of different lengths."""
    model, tok = tiny
    sampler = TwigSampler(model, tok, TwigSettings(bands=1, think=False, reflect=False, image=Sampling(0)))
    fmt = sampler.format
    rows = [fmt.prompt_ids(p) + [fmt.special.boi] for p in PROMPTS]
    width = max(map(len, rows))
    ids = torch.tensor([[fmt.special.pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    ref = model.generate(input_ids=ids, attention_mask=mask, generation_mode="image", do_sample=False,
                         guidance_scale=5.0)
    ours = sampler.generate([Request(p, seed=i) for i, p in enumerate(PROMPTS)])
    assert torch.equal(torch.tensor([t.image_tokens for t in ours]), ref)


def test_incremental_logps_equal_teacher_forced_both_heads(tiny):
    """The log-probs recorded while sampling (ragged guides, reflections, 3 bands) equal one
    teacher-forced pass over the final sequence, for text (lm_head) and image (generation_head)."""
    model, tok = tiny
    sampler = TwigSampler(model, tok, fast(record_logps=True, guide_tokens=10))
    reqs = [Request(PROMPTS[0], 0, guides=["sky", "a red cat sitting on the mat", "floor"]),
            Request(PROMPTS[1], 1), Request(PROMPTS[2], 2, guides=["a", "bird", "branch and leaves"])]
    out = sampler.generate(reqs)
    seq = {k: torch.stack([t.sequence[k] for t in out]) for k in out[0].sequence}
    tf = sequence_logps(model, seq["ids"], seq["is_img"], seq["mask"], seq["target"])
    text = seq["target"] & ~seq["is_img"]
    image = seq["target"] & seq["is_img"]
    assert int(image.sum()) == 3 * 576
    assert int(text.sum(-1).min()) > 0
    assert len(set(text.sum(-1).tolist())) > 1          # ragged text lengths across rows
    assert (tf - seq["logp"]).abs().max().item() < 1e-4
    assert seq["logp"][image].lt(0).all() and seq["logp"][text].le(0).all()


def test_batch_equals_one_at_a_time(tiny):
    """Per-sample seeds: the batch gives each prompt exactly what it gets alone, including when
    another row of the batch redraws a band."""
    model, tok = tiny
    sampler = TwigSampler(model, tok, fast())
    reqs = [Request(PROMPTS[0], 7), Request(PROMPTS[1], 8, reflections=[HIGH[0], " score 10; revised guide: a bright red sky", HIGH[2]]),
            Request(PROMPTS[2], 9)]
    batch = sampler.generate(reqs)
    alone = [sampler.generate([r])[0] for r in reqs]
    assert [b.regenerated for b in batch[1].bands] == [False, True, False]
    for b, a in zip(batch, alone, strict=True):
        assert b.image_tokens == a.image_tokens
        assert [x.guide for x in b.bands] == [x.guide for x in a.bands]
        assert [x.reflection for x in b.bands] == [x.reflection for x in a.bands]
    assert batch[0].image_tokens != batch[2].image_tokens


@pytest.mark.parametrize("layout", ["interleaved", "reprefix"])
def test_low_reflection_redraws_exactly_that_band(tiny, layout):
    model, tok = tiny
    sampler = TwigSampler(model, tok, fast(layout=layout, theta=90, guide_tokens=24))
    low = [HIGH[0], " score 90; revised guide: a bright red sky", HIGH[2]]   # 90 <= theta: redraw
    high = [HIGH[0], " score 91; revised guide: a bright red sky", HIGH[2]]  # 91 > theta: keep
    kept, redrawn = sampler.generate([Request(PROMPTS[0], 3, reflections=high),
                                      Request(PROMPTS[0], 3, reflections=low)])
    assert [b.regenerated for b in kept.bands] == [False, False, False]
    assert [b.regenerated for b in redrawn.bands] == [False, True, False]
    band = slice(8 * 24, 16 * 24)
    assert redrawn.image_tokens[: 8 * 24] == kept.image_tokens[: 8 * 24]        # band 1 untouched
    assert redrawn.first_draws[1] == kept.image_tokens[band]                     # the cut draw
    assert redrawn.image_tokens[band] != kept.image_tokens[band]                 # drawn again
    assert redrawn.bands[1].guide == "a bright red sky"                          # revised guide
    assert redrawn.bands[1].first_attempt["reflection"]["score"] == 90
    assert redrawn.bands[1].reflection["text"] != low[1].strip()                 # reflected anew
    if layout == "interleaved":
        seq = redrawn.sequence
        assert int((seq["target"] & seq["is_img"]).sum()) == 576                 # cut from the cache
        image_ids = seq["ids"][seq["target"] & seq["is_img"]].tolist()
        assert image_ids == redrawn.image_tokens


def test_reprefix_layout_end_to_end(tiny):
    model, tok = tiny
    sampler = TwigSampler(model, tok, fast(layout="reprefix"))
    out = sampler.generate([Request(p, i) for i, p in enumerate(PROMPTS[:2])])
    assert all(len(t.image_tokens) == 576 and len(t.bands) == 3 for t in out)
    assert out[0].sequence is None
    pixels = sampler.decode_images(out)
    assert pixels.shape == (2, 96, 96, 3) and pixels.dtype == torch.uint8
    # given guides reach the re-encoded prefix: changing guide 2 changes band 2 onwards only
    a, b = sampler.generate([Request(PROMPTS[0], 5, guides=["sky", "a cat", "floor"]),
                             Request(PROMPTS[0], 5, guides=["sky", "a dog", "floor"])])
    assert a.image_tokens[:192] == b.image_tokens[:192] and a.image_tokens[192:] != b.image_tokens[192:]


def test_choice_draws_from_the_softmax_and_respects_filters():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]])
    n = 6000
    seeds = torch.arange(n, dtype=torch.int64)
    draws = choose(logits.expand(n, -1), seeds, 1, 0, Sampling(1.0))
    freq = torch.bincount(draws, minlength=5).float() / n
    assert (freq - torch.softmax(logits[0], -1)).abs().max() < 0.02
    assert set(choose(logits.expand(n, -1), seeds, 1, 0, Sampling(1.0, top_k=2)).tolist()) == {0, 1}
    kept = torch.isfinite(filter_logits(logits, Sampling(1.0, top_p=0.6)))[0].tolist()
    assert kept == [True, False, False, False, False]
    assert choose(logits, seeds[:1], 1, 0, Sampling(0)).item() == 0
    u1, u2 = uniform(seeds[:4], 3, 9, 7), uniform(seeds[:4], 3, 9, 7)
    assert torch.equal(u1, u2) and u1.min() > 0 and u1.max() < 1
    assert not torch.equal(uniform(seeds[:4], 3, 10, 7), u1)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(1.0, top_p=1.5)
