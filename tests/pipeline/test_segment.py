"""Bands on the token grid: uniform by default, configurable K and grid, adaptive cuts off objects."""

from __future__ import annotations

from annotators.scene import render_scene, sample_scene
from pipeline.config import load_config
from pipeline.record import Sample
from pipeline.stages.segment import SegmentStage, adaptive_rows, uniform_rows
from schemas import Source


def test_uniform_rows_default_and_other_k():
    assert uniform_rows(24, 3) == [0, 8, 16, 24]
    assert uniform_rows(24, 4) == [0, 6, 12, 18, 24]
    assert uniform_rows(16, 3) == [0, 5, 11, 16]


def test_adaptive_moves_a_boundary_to_the_cheapest_nearby_row():
    cost = {7: 5, 8: 9, 9: 0, 10: 3, 16: 0}.get
    assert adaptive_rows(24, 3, lambda r: cost(r, 10), max_shift=2, min_rows=2) == [0, 9, 16, 24]
    assert adaptive_rows(24, 3, lambda r: 0, max_shift=2, min_rows=2) == [0, 8, 16, 24]


def _sample(spec):
    return Sample(key="k", split="train", source=Source(kind="synthetic", uri="x"),
                  image=render_scene(spec), work={"spec": spec})


def test_adaptive_segmentation_cuts_through_fewer_objects_than_uniform():
    cfg = load_config(None, ["segment.mode=adaptive", "segment.max_shift_rows=3"])
    adaptive = SegmentStage(cfg.segment, cfg.image)
    uniform = SegmentStage(load_config().segment, cfg.image)
    cut_a = cut_u = 0
    for i in range(40):
        spec = sample_scene(3, i)
        for stage, acc in ((adaptive, "a"), (uniform, "u")):
            s = stage(_sample(spec))
            rows = [r.rows[0] for r in s.regions[1:]]
            assert s.regions[0].rows[0] == 0 and s.regions[-1].rows[1] == 24
            n = sum(1 for r in rows for o in spec.drawn if o.box[1] < r * 16 < o.box[3])
            if acc == "a":
                cut_a += n
            else:
                cut_u += n
    assert cut_a < cut_u / 2


def test_adaptive_without_scene_graph_uses_image_edges():
    cfg = load_config(None, ["segment.mode=adaptive", "segment.max_shift_rows=3"])
    spec = sample_scene(1, 2)
    s = _sample(spec)
    s.work = {}
    out = SegmentStage(cfg.segment, cfg.image)(s)
    assert [r.rows for r in out.regions][0][0] == 0 and out.regions[-1].rows[1] == 24
    assert all(r.box[3] - r.box[1] == 16 * (r.rows[1] - r.rows[0]) for r in out.regions)
