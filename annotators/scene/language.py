"""Band guides written from the scene graph: what is newly visible in each band, in varied language.

Guides describe the intended scene (the plan the image should follow), never band positions such as
"top" or "middle"; a defect drawn in the image is what the reflection later catches.
"""

from __future__ import annotations

import random

from annotators.scene.grammar import Obj, SceneSpec
from annotators.scene.vocab import BACKGROUNDS, NUMBER_WORDS, TEXTURE_WORDS, article

Band = tuple[int, int]  # pixel rows [y0, y1)


def describe_prompt(spec: SceneSpec) -> str:
    return spec.prompt


def full_noun(o: Obj) -> str:
    words = [o.color]
    if o.texture != "plain":
        words.append(TEXTURE_WORDS[o.texture])
    words.append(o.shape)
    return " ".join(words)


def where(o: Obj, size: int) -> str:
    cx = (o.box[0] + o.box[2]) / 2 / size
    if cx < 0.36:
        return "on the left"
    if cx > 0.64:
        return "on the right"
    return "near the center"


def first_band(box: tuple[int, int, int, int], bands: list[Band]) -> int:
    """Index of the band in which a box first becomes visible."""
    for i, (_y0, y1) in enumerate(bands):
        if box[1] < y1:
            return i
    return len(bands) - 1


def visible_bands(box: tuple[int, int, int, int], bands: list[Band], min_rows: int = 12) -> list[int]:
    """Bands that show at least `min_rows` pixel rows of a box (the first band always counts)."""
    out = [first_band(box, bands)]
    for i, (y0, y1) in enumerate(bands):
        if i not in out and min(box[3], y1) - max(box[1], y0) >= min_rows:
            out.append(i)
    return sorted(out)


def _relation_phrase(spec: SceneSpec, o: Obj, introduced: set[int]) -> str:
    for subj, rel, other in spec.relations:
        if subj == o.id and other in introduced:
            return f", {rel} the {full_noun(spec.objects[other])}"
        if other == o.id and subj in introduced:
            inverse = {"on the left of": "on the right of", "on the right of": "on the left of",
                       "above": "below", "below": "above", "in front of": "behind",
                       "behind": "in front of"}[rel]
            return f", {inverse} the {full_noun(spec.objects[subj])}"
    return ""


def band_guides(spec: SceneSpec, bands: list[Band], seed: str) -> list[str]:
    """One guide per band: the new content of that band given the bands before it."""
    rng = random.Random(f"twig-guide:{seed}")
    bg = BACKGROUNDS[spec.background]
    sky, ground = rng.choice(bg.sky_words), rng.choice(bg.ground_words)
    introduced: set[int] = set()
    said_sky = said_ground = False
    guides = []
    for k, (y0, y1) in enumerate(bands):
        parts: list[str] = []
        if y0 < spec.horizon and not said_sky:
            decor = [d for d, b in spec.decor if b[1] < y1 and d not in ("star", "flake")]
            extra = ""
            if "sun" in decor:
                extra = rng.choice([" with a round yellow sun", " lit by a bright sun"])
            elif "moon" in decor:
                extra = " with a pale moon and scattered stars"
            elif "cloud" in decor:
                n = decor.count("cloud")
                extra = f" with {NUMBER_WORDS[n] if n > 1 else 'a'} fluffy white cloud{'s' if n > 1 else ''}"
            elif "window" in decor:
                extra = " with a small paned window"
            elif any(d == "flake" for d, _ in spec.decor):
                extra = " with snowflakes drifting down"
            parts.append(rng.choice(["", "Open with "]) + f"{sky}{extra}")
            said_sky = True
        if y0 <= spec.horizon < y1 and not said_ground:
            parts.append(rng.choice([f"below the horizon lies {ground}",
                                     f"a straight horizon gives way to {ground}",
                                     f"{ground} stretches across below it"]))
            said_ground = True
        elif y0 >= spec.horizon and not said_ground:
            parts.append(f"{ground} fills the background")
            said_ground = True
        new = [o for o in spec.objects if first_band(o.box, bands) == k]
        cont = [o for o in spec.objects if o.id in introduced and o.box[3] > y0 + 8]
        for o in cont:
            parts.append(rng.choice([f"the rest of the {full_noun(o)}",
                                     f"the lower part of the {full_noun(o)} {where(o, spec.size)}"]))
        for o in sorted(new, key=lambda x: (x.box[0], x.id)):
            noun = full_noun(o)
            cut = " (its upper part so far)" if o.box[3] > y1 + 8 else ""
            rel = _relation_phrase(spec, o, introduced)
            introduced.add(o.id)
            verb = rng.choice(["sits", "appears", "stands", "is drawn"])
            parts.append(f"{article(noun)} {noun}{cut} {verb} {where(o, spec.size)}{rel}")
        if not new and not cont and said_ground and y0 >= spec.horizon:
            parts.append(rng.choice([f"more of the {ground}, with nothing else in it",
                                     f"only {ground} continues here, evenly shaded"]))
        text = "; ".join(p for p in parts if p).strip()
        guides.append(text[0].upper() + text[1:] + "." if text else "Plain background.")
    return guides
