"""The model-based rewards (CLIP, BLIP/GIT VQA, GroundingDINO) on tiny random checkpoints built
offline into a temporary folder, loaded through the same `from_pretrained` path a Hub checkpoint
takes; and the detector's relation and count logic on hand-made boxes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image, ImageDraw

from trainer.rewards.base import RewardError, Sample
from trainer.rewards.detector import (
    Detection,
    DetectorReward,
    count_score,
    iou,
    plan,
    plan_score,
    presence_score,
    relation_holds,
    spatial_score,
    suppress,
)
from trainer.rewards.phrases import Relation
from trainer.rewards.tiny import KINDS, tiny_checkpoint
from trainer.rewards.vqa import VqaReward, yes_probability

torch.set_num_threads(1)

PROMPTS = [  # one real T2I-CompBench validation prompt per kind of reward logic
    ("a blue bench and a green bowl", "color"),
    ("three apples and two dogs", "numeracy"),
    ("a bee on the right of a refrigerator", "spatial"),
    ("The red hat was on top of the brown coat rack.", "complex"),
]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """All tiny checkpoints, built once into a temporary cache that "tiny" resolves to."""
    root = tmp_path_factory.mktemp("tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWIG_TINY_CACHE", str(root))
        for kind in KINDS:
            tiny_checkpoint(kind)
        yield root


def _image(i: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    image = Image.new("RGB", size, (30 + 50 * i, 200 - 40 * i, 90))
    ImageDraw.Draw(image).rectangle((6 + 4 * i, 8, 30 + 4 * i, 40), fill=(250, 240 - 30 * i, 10))
    return image


def _samples(n: int = 4) -> list[Sample]:
    return [Sample(PROMPTS[i % len(PROMPTS)][0], _image(i), PROMPTS[i % len(PROMPTS)][1])
            for i in range(n)]


@pytest.fixture(scope="module")
def rewards(tiny_root):
    return {
        "clip": _build("clip"),
        "vqa-blip": _build("vqa"),
        "vqa-git": _build("vqa", str(tiny_root / "git-v1")),
        "detector": _build("detector", box_threshold=0.5),
    }


def _build(name: str, model: str = "tiny", **kw):
    from trainer.rewards.clip import ClipReward

    cls = {"clip": ClipReward, "vqa": VqaReward, "detector": DetectorReward}[name]
    return cls(model, device="cpu", batch_size=3, **kw)


# ----------------------------------------------------------------------------- tiny checkpoints


def test_tiny_checkpoint_is_built_once_atomically_and_reproducibly(tmp_path):
    path = tiny_checkpoint("clip", tmp_path)
    again = tiny_checkpoint("clip", tmp_path / "elsewhere")
    weights = (path / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == weights
    assert path == tmp_path / "clip-v1"
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert tiny_checkpoint("clip", tmp_path) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip-v1", "elsewhere"]  # no temp left


def test_tiny_checkpoint_rejects_an_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny checkpoint kind 'sam'"):
        tiny_checkpoint("sam", tmp_path)


# ----------------------------------------------------------------------------- every reward


@pytest.mark.parametrize("name", ["clip", "vqa-blip", "vqa-git", "detector"])
def test_reward_scores_are_in_range_deterministic_and_batch_independent(rewards, name):
    reward = rewards[name]
    samples = _samples(5)  # batch_size 3: two batches
    first = reward.score(samples)
    assert len(first) == len(samples)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in first)
    assert reward.score(samples) == first
    one_by_one = [reward.score([s])[0] for s in samples]
    assert one_by_one == pytest.approx(first, abs=1e-6)
    assert reward.score([]) == []


@pytest.mark.parametrize("name", ["clip", "vqa-blip", "vqa-git", "detector"])
def test_describe_names_the_reward_and_its_model(rewards, name):
    info = rewards[name].describe()
    assert info["name"] == rewards[name].name == name.split("-")[0]
    assert info["model"] == rewards[name].model_id
    json.dumps(info)  # plain values only
    assert not any(word in k.lower() for k in info for word in ("key", "secret", "password"))


def test_default_tiny_model_loads_from_the_tiny_cache(rewards, tiny_root):
    assert rewards["clip"].describe()["checkpoint"] == str(tiny_root / "clip-v1")
    assert rewards["vqa-blip"].describe()["architecture"] == "BlipForQuestionAnswering"
    assert rewards["vqa-git"].describe()["architecture"] == "GitForCausalLM"


@pytest.mark.parametrize(("name", "kind", "message"), [
    ("vqa", "clip", r"'clip' checkpoint .*VqaReward supports BlipForQuestionAnswering \(blip\), "
                    r"GitForCausalLM \(git\)"),
    ("detector", "blip", r"'blip' checkpoint; DetectorReward needs GroundingDINO"),
    ("clip", "gdino", r"'grounding-dino' checkpoint; ClipReward needs a CLIP-architecture one"),
])
def test_a_checkpoint_of_the_wrong_architecture_is_refused(tiny_root, name, kind, message):
    with pytest.raises(RewardError, match=message):
        _build(name, str(tiny_root / f"{kind}-v1"))


def test_a_missing_checkpoint_is_a_reward_error(tmp_path):
    with pytest.raises(RewardError, match="vqa: cannot load the config"):
        VqaReward(str(tmp_path / "nowhere"))


# ----------------------------------------------------------------------------- CLIP


def test_clip_score_is_the_clipped_cosine_of_the_model_embeddings(rewards):
    reward = rewards["clip"]
    samples = _samples(5)
    inputs = reward.processor(text=[s.prompt for s in samples], images=[s.image for s in samples],
                              padding=True, return_tensors="pt")
    with torch.no_grad():
        out = reward.model(**inputs)
        cosine = (out.logits_per_image.diagonal() / reward.model.logit_scale.exp()).tolist()
    assert reward.cosines(samples) == pytest.approx(cosine, abs=1e-5)
    assert len(set(cosine)) == len(cosine) and all(c != 0 for c in cosine)
    assert [reward.cosines([s])[0] for s in samples] == pytest.approx(cosine, abs=1e-6)
    assert reward.score(samples) == pytest.approx([min(max(c, 0), 1) for c in cosine], abs=1e-5)


def test_clip_truncates_prompts_longer_than_its_text_window(rewards):
    long = Sample("a blue bench and a green bowl " * 40, _image(0))  # ~1200 tokens here
    longer = Sample(long.prompt + "and a red cup", _image(0))
    short = Sample(long.prompt[:60], _image(0))
    cosines = rewards["clip"].cosines([long, longer, short])
    assert cosines[0] == pytest.approx(cosines[1], abs=1e-6)  # the tail is cut off
    assert cosines[0] != pytest.approx(cosines[2], abs=1e-4)
    assert cosines[0] == pytest.approx(rewards["clip"].cosines([long])[0], abs=1e-6)


# ----------------------------------------------------------------------------- VQA


def test_yes_probability_is_the_softmax_over_the_two_answers():
    logliks = torch.tensor([[-1.0, -1.0], [-0.1, -3.0], [-30.0, -0.5], [-2.0, float("-inf")]])
    p = yes_probability(logliks)
    assert p.tolist() == pytest.approx([0.5, 1 / (1 + math.exp(-2.9)), 1 / (1 + math.exp(29.5)),
                                        1.0])


def test_vqa_asks_one_question_per_attribute_phrase():
    reward = VqaReward.__new__(VqaReward)  # the question logic needs no model
    assert reward.questions(Sample("a blue bench and a green bowl", _image(0))) == [
        "blue bench?", "green bowl?"]
    assert reward.questions(Sample("!!", _image(0))) == ["?"]
    assert reward.questions(Sample("Is it there", _image(0))) == ["Is it there?"]


@pytest.mark.parametrize("name", ["vqa-blip", "vqa-git"])
def test_vqa_score_is_the_product_of_per_phrase_yes_probabilities(rewards, name):
    reward = rewards[name]
    image = _image(1)
    logliks = reward.backend.answer_logliks([image, image], ["blue bench?", "green bowl?"])
    probs = torch.softmax(logliks.double(), -1)[:, 0]
    assert ((probs > 0.01) & (probs < 0.99)).all()  # a random model is unsure either way
    p_each = reward.yes_probability([image, image], ["blue bench?", "green bowl?"])
    assert p_each == pytest.approx(probs.tolist(), rel=1e-5)
    score = reward.score([Sample("a blue bench and a green bowl", image)])[0]
    assert score == pytest.approx(p_each[0] * p_each[1], rel=1e-5)


def test_blip_questions_of_different_lengths_batch_like_single_ones(rewards):
    """transformers 5.23 drops BLIP's cross-attention mask; padding must not change a score."""
    reward = rewards["vqa-blip"]
    image = _image(2)
    questions = ["cat?", "a much longer question about a striped hexagon?"]
    together = reward.yes_probability([image, image], questions)
    alone = [reward.yes_probability([image], [q])[0] for q in questions]
    assert together == pytest.approx(alone, abs=1e-7)


@pytest.mark.parametrize("name", ["vqa-blip", "vqa-git"])
def test_vqa_truncates_a_question_longer_than_the_text_window(rewards, name):
    long = "!" + " very" * 400  # no noun phrase: the whole prompt is asked
    score = rewards[name].score([Sample(long, _image(0)), Sample(long + " very", _image(0))])
    assert score[0] == pytest.approx(score[1], abs=1e-6) and 0.0 < score[0] < 1.0


def test_vqa_uses_the_scene_phrases_when_the_scene_is_known():
    from annotators.scene.grammar import sample_scene, scene_graph

    spec = sample_scene(3, 0, defect_rate=0.0, categories=("color",))
    reward = VqaReward.__new__(VqaReward)
    sample = Sample(spec.prompt, _image(0), "color", scene_graph(spec))
    assert reward.questions(sample) == [f"{o.color} {o.shape}?" for o in spec.objects]


# ----------------------------------------------------------------------------- detector logic

LEFT, RIGHT = (0.05, 0.4, 0.3, 0.7), (0.6, 0.35, 0.95, 0.75)
TOP, BOTTOM = (0.4, 0.05, 0.6, 0.3), (0.35, 0.6, 0.65, 0.95)


def _dets(*boxes, score=0.9) -> list[Detection]:
    return [Detection(b, score - 0.01 * i) for i, b in enumerate(boxes)]


def test_iou_and_suppression():
    assert iou(LEFT, LEFT) == pytest.approx(1.0)
    assert iou(LEFT, RIGHT) == 0.0
    assert iou((0, 0, 2, 1), (1, 0, 3, 1)) == pytest.approx(1 / 3)
    near_copy = (0.06, 0.41, 0.31, 0.71)
    kept = suppress([Detection(near_copy, 0.5), Detection(LEFT, 0.9), Detection(RIGHT, 0.4)])
    assert kept == [Detection(LEFT, 0.9), Detection(RIGHT, 0.4)]


@pytest.mark.parametrize(("relation", "subject", "obj", "holds"), [
    ("left of", LEFT, RIGHT, True), ("left of", RIGHT, LEFT, False),
    ("right of", RIGHT, LEFT, True), ("right of", LEFT, RIGHT, False),
    ("above", TOP, BOTTOM, True), ("above", BOTTOM, TOP, False),
    ("below", BOTTOM, TOP, True), ("below", TOP, BOTTOM, False),
    ("next to", LEFT, RIGHT, None), ("behind", RIGHT, LEFT, None),
])
def test_relation_by_box_centres(relation, subject, obj, holds):
    assert relation_holds(relation, subject, obj) is holds


def test_spatial_score_uses_each_objects_best_box():
    cat_left_best = [Detection(RIGHT, 0.4), Detection(LEFT, 0.9)]
    assert spatial_score("left of", cat_left_best, _dets(RIGHT)) == 1.0
    assert spatial_score("right of", cat_left_best, _dets(RIGHT)) == 0.5
    assert spatial_score("left of", [], _dets(RIGHT)) == 0.0
    assert spatial_score("next to", _dets(LEFT), _dets(RIGHT)) == 1.0
    assert spatial_score("next to", _dets(LEFT), []) == 0.0


def test_count_and_presence_scores():
    assert count_score(3, 3) == 1.0 and count_score(3, 2) == 0.0 and count_score(3, 4) == 0.0
    assert count_score(None, 2) == 1.0 and count_score(None, 0) == 0.0
    assert presence_score([1, 0, 3, 0]) == 0.5 and presence_score([]) == 1.0


def test_plan_scores_a_spatial_prompt_by_where_the_boxes_are():
    p = plan(Sample("a cat on the left of a dog", _image(0)))
    assert p.mode == "spatial" and p.relation == Relation("cat", "left of", "dog")
    assert p.queries == ["cat", "dog"]
    assert plan_score(p, {"cat": _dets(LEFT), "dog": _dets(RIGHT)}) == 1.0
    assert plan_score(p, {"cat": _dets(RIGHT), "dog": _dets(LEFT)}) == 0.5  # swapped places
    assert plan_score(p, {"cat": _dets(LEFT), "dog": []}) == 0.0


def test_plan_scores_a_numeracy_prompt_by_exact_counts():
    p = plan(Sample("three apples and two dogs", _image(0)))
    assert p.mode == "numeracy" and p.objects == [("apple", 3), ("dog", 2)]
    three = suppress(_dets(LEFT, RIGHT, TOP, (0.06, 0.41, 0.31, 0.71)))  # a duplicate of LEFT
    assert len(three) == 3
    assert plan_score(p, {"apple": three, "dog": _dets(LEFT, RIGHT)}) == 1.0
    assert plan_score(p, {"apple": three, "dog": _dets(LEFT)}) == 0.5
    assert plan_score(p, {"apple": _dets(LEFT), "dog": []}) == 0.0


def test_plan_scores_other_prompts_by_the_fraction_found():
    p = plan(Sample("a blue bench and a green bowl", _image(0), "color"))
    assert p.mode == "presence" and p.queries == ["blue bench", "green bowl"]
    assert plan_score(p, {"blue bench": _dets(LEFT), "green bowl": []}) == 0.5
    spatial_but_complex = plan(Sample("The red hat was on top of the brown coat rack.",
                                      _image(0), "complex"))
    assert spatial_but_complex.mode == "presence"


def test_plan_reads_the_scene_when_it_is_known():
    from annotators.scene.grammar import sample_scene, scene_graph

    spec = sample_scene(5, 1, defect_rate=0.0, categories=("spatial",))
    p = plan(Sample(spec.prompt, _image(0), "spatial", scene_graph(spec)))
    a, b = spec.objects
    assert p.mode == "spatial"
    assert p.relation.subject == f"{a.color} {a.shape}" and p.relation.object == f"{b.color} {b.shape}"


def test_detector_batches_images_of_mixed_sizes_like_single_ones(rewards):
    reward = rewards["detector"]
    samples = [Sample("a cat and a dog", _image(0, (64, 48))),
               Sample("a cat and a dog", _image(1, (40, 70))),
               Sample("two cats", _image(2, (64, 48)))]
    assert reward.score(samples) == [reward.score([s])[0] for s in samples]
