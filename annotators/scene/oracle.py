"""Reflections computed from the actual defect: criteria scores, critique and a revised guide.

A band that shows the defect scores low on the criterion the defect breaks and gets a revised guide
that says what must change; a clean band scores high and keeps its guide.
"""

from __future__ import annotations

import random

from annotators.scene.grammar import SceneSpec
from annotators.scene.language import Band, full_noun, visible_bands
from annotators.scene.vocab import NUMBER_WORDS, TEXTURE_WORDS
from schemas import CRITERIA

_HIT = {  # defect -> (criterion it breaks, criteria it dents)
    "wrong_color": ("color_accuracy", ("visual_coherence",)),
    "missing_object": ("object_completeness", ("spatial_relationships", "detail_richness")),
    "extra_object": ("object_completeness", ("spatial_relationships",)),
    "wrong_texture": ("detail_richness", ("visual_coherence",)),
    "wrong_position": ("spatial_relationships", ("visual_coherence",)),
}


def defect_bands(spec: SceneSpec, bands: list[Band]) -> list[int]:
    """The bands in which the scene's defect is visible (empty for a clean scene)."""
    d = spec.defect
    if d is None:
        return []
    boxes = [o.box for o in spec.objects if o.id == d.object]
    boxes += [o.box for o in spec.drawn if o.id == d.object]
    out: set[int] = set()
    for box in boxes:
        out.update(visible_bands(box, bands))
    return sorted(out)


def _texture_word(t: str) -> str:
    return TEXTURE_WORDS[t] or "plain"


def _count_words(text: str) -> str:
    n, shape = text.split(" ", 1)
    return f"{NUMBER_WORDS.get(int(n), n)} {shape}{'s' if int(n) > 1 else ''}"


def _critique_and_fix(spec: SceneSpec) -> tuple[str, str]:
    d = spec.defect
    assert d is not None
    if d.kind == "wrong_color":
        o = spec.objects[d.object]
        return (f"The {o.shape} here is {d.actual}, but it should be {d.expected}.",
                f"Draw the {o.shape} in {d.expected}, not {d.actual}.")
    if d.kind == "wrong_texture":
        o = spec.objects[d.object]
        return (f"The {o.color} {o.shape} is {_texture_word(d.actual)} instead of "
                f"{_texture_word(d.expected)}.",
                f"Give the {o.color} {o.shape} a {_texture_word(d.expected)} pattern, "
                f"not a {_texture_word(d.actual)} one.")
    if d.kind == "missing_object":
        return (f"The {d.expected} that belongs in this part of the image is missing.",
                f"Make sure the {d.expected} is actually drawn here.")
    if d.kind == "extra_object":
        return (f"There are {_count_words(d.actual)} where the prompt asks for "
                f"{_count_words(d.expected)}.",
                f"Draw exactly {_count_words(d.expected)}, no more.")
    subj = next(r for r in spec.relations if r[0] == d.object)
    a, b = spec.objects[subj[0]], spec.objects[subj[2]]
    return (f"The {full_noun(a)} is {d.actual} the {full_noun(b)}, but it should be "
            f"{d.expected} it.",
            f"Place the {full_noun(a)} {d.expected} the {full_noun(b)}.")


def band_reflections(spec: SceneSpec, bands: list[Band], guides: list[str], seed: str,
                     theta: int = 90) -> list[dict]:
    """One reflection per band, as dicts matching `schemas.Reflection`."""
    rng = random.Random(f"twig-reflect:{seed}")
    bad = set(defect_bands(spec, bands))
    out = []
    for k, guide in enumerate(guides):
        if k in bad:
            broken, dented = _HIT[spec.defect.kind]
            crit = {c: rng.randint(80, 96) for c in CRITERIA}
            crit[broken] = rng.randint(5, 35)
            for c in dented:
                crit[c] = rng.randint(50, 78)
            critique, fix = _critique_and_fix(spec)
            revised = f"{guide.rstrip('.')}. {fix}"
        else:
            crit = {c: rng.randint(92, 100) for c in CRITERIA}
            critique = rng.choice([
                "This part matches its guide: shapes, colors and placement are right.",
                "Everything described for this part is present and drawn cleanly.",
                "The content follows the guide and blends with what was drawn before.",
            ])
            revised = guide
        score = round(sum(crit.values()) / len(crit))
        accepted = score > theta
        if k in bad and accepted:  # never let a defect through as accepted
            score = theta
            accepted = False
        out.append({"score": score, "criteria": crit, "critique": critique,
                     "revised_guide": revised, "accepted": accepted})
    return out
