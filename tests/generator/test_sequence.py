"""The TwiG sequence format: band grid, reflection text, and the interleaved layout."""

from __future__ import annotations

import pytest

from generator.model import tiny_tokenizer
from generator.sequence import (
    BandGrid,
    FormatError,
    TwigFormat,
    flatten,
    parse_reflection,
    render_reflection,
)
from schemas.twig_v1 import CRITERIA


def test_band_grid_tiles_the_token_grid():
    grid = BandGrid.uniform(24, 24, 3)
    assert grid.bounds == ((0, 8), (8, 16), (16, 24))
    assert [grid.tokens(k) for k in range(3)] == [(0, 192), (192, 384), (384, 576)]
    assert BandGrid.uniform(24, 24, 5).bounds[-1][1] == 24
    assert BandGrid.from_rows(24, 24, [[0, 4], [4, 24]]).size(1) == 20 * 24
    with pytest.raises(FormatError, match="contiguous"):
        BandGrid.from_rows(24, 24, [[0, 8], [9, 24]])
    with pytest.raises(FormatError, match="fit"):
        BandGrid.uniform(24, 24, 25)


def test_reflection_text_round_trips_short_and_detailed():
    short = render_reflection(87, "a red barn under a grey sky")
    assert short == " score 87; revised guide: a red barn under a grey sky"
    p = parse_reflection(short)
    assert (p.score, p.revised_guide, p.parsed) == (87, "a red barn under a grey sky", True)
    criteria = dict(zip(CRITERIA, [90, 85, 80, 88, 92], strict=True))
    detailed = render_reflection(40, "two cats", criteria, "only one cat is drawn")
    p = parse_reflection(detailed)
    assert (p.score, p.criteria, p.critique, p.revised_guide) == (40, criteria, "only one cat is drawn", "two cats")
    assert parse_reflection("Score: 72 - Revised guide: more blue").score == 72
    assert parse_reflection("score 150; revised guide: x").score is None     # out of range
    assert not parse_reflection("\u00ff\u00fe noise").parsed


def test_interleaved_layout_with_and_without_thinking():
    fmt = TwigFormat(tiny_tokenizer(), BandGrid.uniform(24, 24, 1))
    plain = fmt.interleaved("a red cat", None, [list(range(576))])
    ids, img, tgt = flatten(plain)
    assert ids == fmt.prompt_ids("a red cat") + [fmt.special.boi] + list(range(576))   # Janus-Pro's own
    assert sum(img) == 576 and sum(tgt) == 576
    fmt3 = TwigFormat(tiny_tokenizer(), BandGrid.uniform(24, 24, 3))
    segs = fmt3.interleaved("a red cat", ["sky", "cat", "floor"], [[1] * 192] * 3,
                            [render_reflection(95, "sky")] * 3)
    kinds = [s.kind for s in segs]
    assert kinds[:8] == ["prompt", "open", "guide", "boi", "band", "eoi", "open", "reflection"]
    assert fmt3.decode(segs[2].ids) == "sky" and segs[2].ids[-1] == fmt3.special.eos
    assert fmt3.decode(segs[1].ids) == "Guide 1/3:"
    with pytest.raises(FormatError, match="band 2 holds"):
        fmt3.interleaved("x", None, [[1] * 192, [1] * 10, [1] * 192])
    with pytest.raises(FormatError, match="layout"):
        TwigFormat(tiny_tokenizer(), BandGrid.uniform(24, 24, 3), "sideways")


def test_reprefix_prompt_folds_guides_into_the_user_turn():
    fmt = TwigFormat(tiny_tokenizer(), BandGrid.uniform(24, 24, 3), "reprefix")
    text = fmt.decode(fmt.prompt_ids("a red cat", ["blue sky", "a cat"]))
    assert text == "<|User|>: a red cat\nRegion 1/3: blue sky\nRegion 2/3: a cat\n\n<|Assistant|>:"
    assert fmt.uncond(fmt.prompt_ids("a cat") + [fmt.special.boi])[1:-1] == [fmt.special.pad] * (
        len(fmt.prompt_ids("a cat")) - 1)
