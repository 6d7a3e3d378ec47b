"""Task expansion: 9 instances per clean trajectory; a rejected band is not a generation target."""

from __future__ import annotations

from schemas import load_record
from sharding.tasks import count_tasks, expand
from tests.schemas.test_twig_v1 import record


def test_clean_trajectory_gives_nine_instances_with_the_right_context():
    rec = load_record(record())
    inst = expand(rec)
    assert len(inst) == 9
    think2 = next(i for i in inst if i["task"] == "think" and i["band"] == 1)
    assert think2["guides"] == ["guide 0"] and think2["image_rows"] == [0, 8]
    assert think2["target"] == {"guide": "guide 1"}
    reflect3 = next(i for i in inst if i["task"] == "reflect" and i["band"] == 2)
    assert reflect3["guides"] == ["guide 0", "guide 1", "guide 2"] and reflect3["image_rows"] == [0, 24]
    gen1 = next(i for i in inst if i["task"] == "generate" and i["band"] == 0)
    assert gen1["guides"] == ["guide 0"] and gen1["image_rows"] == [0, 0]
    assert gen1["target"] == {"image_rows": [0, 8]}


def test_flagged_band_is_reflected_on_but_not_generated():
    data = record()
    data["regions"][1]["reflection"].update(score=40, accepted=False, revised_guide="fix it")
    counts = count_tasks([load_record(data)])
    assert counts["think_2"] == 1 and counts["reflect_2"] == 1 and "generate_2" not in counts
    assert counts["total"] == 8 and list(counts)[:3] == ["think_1", "think_2", "think_3"]
