"""The prompt reader behind the model rewards, on real T2I-CompBench validation prompts of every
category and on synthetic scenes."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from trainer.rewards.phrases import (
    Relation,
    counted_objects,
    noun_phrases,
    scene_objects,
    scene_phrases,
    scene_relation,
    singular,
    spatial_relation,
)

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "t2i-compbench"
CATEGORIES = ("color", "shape", "texture", "spatial", "3d_spatial", "non_spatial", "numeracy",
              "complex")


@cache
def val(category: str) -> frozenset[str]:
    return frozenset((ASSETS / f"{category}_val.txt").read_text().splitlines())


def real(category: str, prompt: str) -> str:
    """The prompt, after checking that it is a real validation prompt of the category."""
    assert prompt in val(category), f"{prompt!r} is not in {category}_val.txt"
    return prompt


@pytest.mark.parametrize(("category", "prompt", "phrases"), [
    ("color", "a blue bench and a green bowl", ["blue bench", "green bowl"]),
    ("color", "a brown banana and a green dog", ["brown banana", "green dog"]),
    ("color", "A bathroom with beige tile and a white toilet.",
     ["bathroom", "beige tile", "white toilet"]),
    ("shape", "an oblong cucumber and a teardrop plum", ["oblong cucumber", "teardrop plum"]),
    ("shape", "a diamond engagement ring and a round pendant",
     ["diamond engagement ring", "round pendant"]),
    ("shape", "The circular wreath and the rectangular picture frame hung on the front door.",
     ["circular wreath", "rectangular picture frame", "front door"]),
    ("texture", "rubber sole shoes and fluffy clouds", ["rubber sole shoes", "fluffy clouds"]),
    ("texture", "a metallic desk lamp and a fluffy sweater",
     ["metallic desk lamp", "fluffy sweater"]),
    ("spatial", "a girl on the top of a frog", ["girl", "frog"]),
    ("3d_spatial", "a girl hidden by a bird", ["girl", "bird"]),
    ("non_spatial", "A person is looking at a rainbow and marveling at its beauty.",
     ["person", "rainbow", "beauty"]),
    ("complex", "The red hat was on top of the brown coat rack.", ["red hat", "brown coat rack"]),
    ("complex", "The black phone was resting on the brown charger.",
     ["black phone", "brown charger"]),
])
def test_noun_phrases_of_real_prompts(category, prompt, phrases):
    assert noun_phrases(real(category, prompt)) == phrases


@pytest.mark.parametrize(("category", "prompt", "objects"), [
    ("numeracy", "two boys", [("boy", 2)]),
    ("numeracy", "one turtle", [("turtle", 1)]),
    ("numeracy", "three fish", [("fish", 3)]),
    ("numeracy", "four chickens and two bees", [("chicken", 4), ("bee", 2)]),
    ("numeracy", "two toys, four kites, one turtle and two people",
     [("toy", 2), ("kite", 4), ("turtle", 1), ("person", 2)]),
    ("numeracy", "three turtles, two balloons, one fish, four kites and two bees",
     [("turtle", 3), ("balloon", 2), ("fish", 1), ("kite", 4), ("bee", 2)]),
    ("numeracy", "a fish, two stools, a lemon, and two vases were on the kitchen island",
     [("fish", 1), ("stool", 2), ("lemon", 1), ("vase", 2), ("kitchen island", None)]),
    ("numeracy", "five hamburgers sizzled on the grill", [("hamburger", 5), ("grill", None)]),
    ("numeracy", "two chickens, four pens and one lemon",
     [("chicken", 2), ("pen", 4), ("lemon", 1)]),
    ("color", "a blue bench and a green bowl", [("blue bench", 1), ("green bowl", 1)]),
    ("texture", "rubber gloves and a fluffy pillow",
     [("rubber gloves", None), ("fluffy pillow", 1)]),
])
def test_counted_objects_of_real_prompts(category, prompt, objects):
    assert counted_objects(real(category, prompt)) == objects


def test_counts_in_digits_and_every_number_word():
    assert counted_objects("3 dogs and 10 mice") == [("dog", 3), ("mouse", 10)]
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    for n, word in enumerate(words, 1):
        assert counted_objects(f"{word} cats") == [("cat" if n > 1 else "cats", n)]


@pytest.mark.parametrize(("plural", "one"), [
    ("apples", "apple"), ("strawberries", "strawberry"), ("benches", "bench"),
    ("boxes", "box"), ("glasses", "glasses"), ("tomatoes", "tomato"), ("shoes", "shoe"),
    ("knives", "knife"), ("people", "person"), ("sheep", "sheep"), ("bus", "bus"),
    ("dog", "dog"), ("octopus", "octopus"), ("dresses", "dress"),
])
def test_singular(plural, one):
    assert singular(plural) == one


@pytest.mark.parametrize(("category", "prompt", "relation"), [
    ("spatial", "a giraffe next to a lamp", ("giraffe", "next to", "lamp")),
    ("spatial", "a girl on the top of a frog", ("girl", "above", "frog")),
    ("spatial", "a mouse on side of a key", ("mouse", "on side of", "key")),
    ("spatial", "a bee on the right of a refrigerator", ("bee", "right of", "refrigerator")),
    ("spatial", "a cup on the left of a pig", ("cup", "left of", "pig")),
    ("spatial", "a dog on the bottom of a refrigerator", ("dog", "below", "refrigerator")),
    ("spatial", "a pig near a wallet", ("pig", "near", "wallet")),
    ("3d_spatial", "a dog in front of a desk", ("dog", "in front of", "desk")),
    ("3d_spatial", "a cat behind a boy", ("cat", "behind", "boy")),
    ("3d_spatial", "a girl hidden by a bird", ("girl", "hidden by", "bird")),
    ("complex", "The red hat was on top of the brown coat rack.",
     ("red hat", "above", "brown coat rack")),
    ("complex", "The black chair was next to the silver table.",
     ("black chair", "next to", "silver table")),
])
def test_spatial_relation_of_real_prompts(category, prompt, relation):
    assert spatial_relation(real(category, prompt)) == Relation(*relation)


def test_every_spatial_val_prompt_has_a_relation_and_two_objects():
    for category in ("spatial", "3d_spatial"):
        for prompt in val(category):
            rel = spatial_relation(prompt)
            assert rel is not None and rel.subject and rel.object, prompt


def test_templated_attribute_prompts_give_two_phrases():
    two = [p for p in val("color") | val("shape") | val("texture")
           if p.startswith(("a ", "an ")) and p.count(" and ") == 1 and "," not in p]
    assert len(two) > 500
    bad = [p for p in two if len(noun_phrases(p)) != 2]
    assert len(bad) <= len(two) // 50, bad[:10]


@pytest.mark.parametrize("prompt", [
    "A dog is chasing after a ball and wagging its tail.",
    "A long, narrow black kitchen with yellow and white floor tiles.",
    "two sheep, four dogs, three candles, and three bees created a warm atmosphere",
])
def test_no_phrase_keeps_an_article_or_a_verb(prompt):
    for phrase in noun_phrases(real(_category_of(prompt), prompt)):
        words = phrase.split()
        assert words[0] not in {"a", "an", "the", "is", "are", "two", "four", "three"}, phrase
        assert not any(w in {"is", "are", "chasing", "wagging", "created", "with"} for w in words)


def _category_of(prompt: str) -> str:
    return next(c for c in CATEGORIES if prompt in val(c))


def test_no_relation_or_phrases_in_empty_text():
    assert spatial_relation("a blue bench and a green bowl") is None
    assert spatial_relation("on the left of a dog") is None  # no subject
    assert noun_phrases("") == [] and counted_objects("...") == []


# ----------------------------------------------------------------------------- synthetic scenes


def _scene(index: int, category: str):
    from annotators.scene.grammar import sample_scene, scene_graph

    spec = sample_scene(7, index, defect_rate=0.0, categories=(category,))
    return spec, scene_graph(spec)


@pytest.mark.parametrize("category", ["color", "shape", "texture", "spatial", "3d_spatial",
                                      "numeracy", "complex"])
def test_scene_reading_agrees_with_the_synthetic_prompt(category):
    for index in range(6):
        spec, scene = _scene(index, category)
        assert sorted(scene_objects(scene, spec.prompt)) == sorted(counted_objects(spec.prompt))
        assert scene_relation(scene, spec.prompt) == spatial_relation(spec.prompt)
        assert set(scene_phrases(scene, spec.prompt)) == {
            name for name, _ in counted_objects(spec.prompt)}


def test_scene_phrases_without_prompt_say_every_attribute():
    spec, scene = _scene(0, "texture")
    obj = scene.objects[0]
    assert scene_phrases(scene)[0].split()[0] == obj.color
    assert obj.color not in spec.prompt.split()  # the texture prompts do not say the color
    assert scene_phrases(scene, spec.prompt)[0].split()[0] != obj.color
