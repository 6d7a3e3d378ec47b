"""Synthetic scenes: seeded, drawn as specified, defects visible and caught by the reflections."""

from __future__ import annotations

import numpy as np

from annotators.scene import band_guides, band_reflections, render_scene, sample_scene
from annotators.scene.oracle import defect_bands
from annotators.scene.vocab import COLORS

BANDS = [(0, 128), (128, 256), (256, 384)]


def test_same_seed_same_scene_and_pixels():
    a, b = sample_scene(7, 11), sample_scene(7, 11)
    assert a == b
    assert np.array_equal(np.asarray(render_scene(a)), np.asarray(render_scene(b)))
    assert sample_scene(7, 12) != a


def test_every_category_appears_and_objects_are_drawn_in_their_color():
    seen = set()
    for i in range(120):
        spec = sample_scene(0, i, defect_rate=0.0)
        seen.add(spec.category)
        img = np.asarray(render_scene(spec)).astype(int)
        o = spec.drawn[-1]
        cx, cy = (o.box[0] + o.box[2]) // 2, (o.box[1] + o.box[3]) // 2
        if o.texture == "plain" and o.shape != "star":
            assert np.abs(img[cy, cx] - np.array(COLORS[o.color])).sum() < 40
    assert seen == {"color", "shape", "texture", "spatial", "3d_spatial", "numeracy", "complex"}


def test_defective_bands_score_low_with_a_revised_guide_and_clean_ones_high():
    flagged = clean = 0
    for i in range(80):
        spec = sample_scene(5, i, defect_rate=1.0)
        guides = band_guides(spec, BANDS, seed=str(i))
        refl = band_reflections(spec, BANDS, guides, seed=str(i))
        bad = set(defect_bands(spec, BANDS))
        assert bad, spec
        for k, r in enumerate(refl):
            if k in bad:
                flagged += 1
                assert r["score"] <= 90 and not r["accepted"]
                assert r["revised_guide"] != guides[k] and r["revised_guide"].startswith(guides[k].rstrip("."))
            else:
                clean += 1
                assert r["score"] > 90 and r["accepted"] and r["revised_guide"] == guides[k]
    assert flagged and clean


def test_guides_are_varied_and_say_what_is_new():
    texts = set()
    for i in range(30):
        spec = sample_scene(2, i, defect_rate=0.0)
        guides = band_guides(spec, BANDS, seed=str(i))
        assert len(guides) == 3 and all(g.strip() for g in guides)
        mentioned = " ".join(guides)
        for o in spec.objects:
            assert o.shape in mentioned
        texts.update(guides)
    assert len(texts) > 80
