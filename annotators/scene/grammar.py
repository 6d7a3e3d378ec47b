"""A seeded grammar of compositional scenes in the T2I-CompBench categories that can be drawn.

A `SceneSpec` is the exact scene graph: background, decorations, the objects the prompt asks for
(with boxes and depth), their relations, the prompt text and, for a share of scenes, one real defect
that the renderer draws instead of the intended object.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from annotators.scene.vocab import (
    BACKGROUNDS,
    COLORS,
    NUMBER_WORDS,
    SHAPES,
    TEXTURE_WORDS,
    TEXTURES,
    article,
    color_distance,
)

CATEGORIES = ("color", "shape", "texture", "spatial", "3d_spatial", "numeracy", "complex")
DEFECT_KINDS = ("wrong_color", "missing_object", "extra_object", "wrong_position", "wrong_texture")


@dataclass(frozen=True)
class Obj:
    id: int
    shape: str
    color: str
    texture: str
    box: tuple[int, int, int, int]
    depth: int = 0

    def noun(self, *, color: bool = True, texture: bool = True) -> str:
        words = []
        if color:
            words.append(self.color)
        if texture and self.texture != "plain":
            words.append(TEXTURE_WORDS[self.texture])
        words.append(self.shape)
        return " ".join(words)


@dataclass(frozen=True)
class DefectSpec:
    kind: str
    object: int
    expected: str
    actual: str


@dataclass(frozen=True)
class SceneSpec:
    category: str
    background: str
    horizon: int
    decor: tuple[tuple[str, tuple[int, int, int, int]], ...]
    objects: tuple[Obj, ...]
    relations: tuple[tuple[int, str, int], ...]
    prompt: str
    mentions: frozenset[str]
    size: int
    defect: DefectSpec | None = None
    drawn: tuple[Obj, ...] = field(default=())  # what the renderer draws (objects with the defect)


class _Layout:
    """Places boxes on the canvas without overlaps (unless asked)."""

    def __init__(self, rng: random.Random, size: int) -> None:
        self.rng, self.size, self.boxes = rng, size, []

    def free(self, box: tuple[int, int, int, int], pad: int) -> bool:
        x0, y0, x1, y1 = box
        return all(
            x1 + pad <= b[0] or b[2] + pad <= x0 or y1 + pad <= b[1] or b[3] + pad <= y0
            for b in self.boxes
        )

    def place(self, w: int, h: int, x_range: tuple[float, float], y_range: tuple[float, float],
              pad: int = 6) -> tuple[int, int, int, int]:
        s = self.size
        for _ in range(200):
            cx = self.rng.uniform(*x_range) * s
            cy = self.rng.uniform(*y_range) * s
            x0, y0 = int(cx - w / 2), int(cy - h / 2)
            x0 = min(max(x0, 4), s - w - 4)
            y0 = min(max(y0, 4), s - h - 4)
            box = (x0, y0, x0 + w, y0 + h)
            if self.free(box, pad):
                self.boxes.append(box)
                return box
        raise _NoRoom


class _NoRoom(Exception):
    pass


def _pick_color(rng: random.Random, bg_colors: list[tuple[int, int, int]],
                avoid: set[str] = frozenset()) -> str:
    names = [c for c in COLORS if c not in avoid
             and all(color_distance(COLORS[c], b) > 90 for b in bg_colors)]
    return rng.choice(names)


def sample_scene(seed: int, index: int, size: int = 384, defect_rate: float = 0.25,
                 categories: tuple[str, ...] = CATEGORIES) -> SceneSpec:
    """The scene for (seed, index): the same arguments always give the same scene."""
    rng = random.Random(f"twig-scene:{seed}:{index}")
    for _attempt in range(50):
        try:
            spec = _sample(rng, size, rng.choice(categories))
        except _NoRoom:
            continue
        if rng.random() < defect_rate:
            spec = _with_defect(rng, spec)
        return spec
    raise RuntimeError(f"could not lay out scene {seed}:{index}")


def _sample(rng: random.Random, size: int, category: str) -> SceneSpec:
    bg = BACKGROUNDS[rng.choice(sorted(BACKGROUNDS))]
    horizon = int(size * rng.uniform(0.34, 0.62))
    bg_colors = [bg.sky_top, bg.sky_bottom, bg.ground]
    layout = _Layout(rng, size)
    decor = _decor(rng, bg.decor, size, horizon, layout)
    unit = size / 384
    low = horizon / size  # objects stand mostly on the ground, some float in the sky

    def dims(scale: float = 1.0) -> tuple[int, int]:
        side = int(rng.uniform(62, 100) * unit * scale)
        return side, side

    def obj(i: int, box, shape=None, color=None, texture="plain", depth=0, avoid=frozenset()):
        return Obj(i, shape or rng.choice(SHAPES), color or _pick_color(rng, bg_colors, avoid),
                   texture, box, depth)

    objects: list[Obj] = []
    relations: list[tuple[int, str, int]] = []
    mentions: set[str] = {"shape"}
    y_band = (max(0.18, low - 0.1), 0.82)

    if category in ("color", "shape", "texture"):
        yc = rng.uniform(*y_band)
        b0 = layout.place(*dims(), (0.15, 0.4), (yc, yc))
        b1 = layout.place(*dims(), (0.6, 0.85), (yc - 0.05, yc + 0.05))
        s0, s1 = rng.sample(SHAPES, 2)
        if category == "texture":
            t0, t1 = rng.sample(TEXTURES[1:], 2)
            o0, o1 = obj(0, b0, s0, texture=t0), obj(1, b1, s1, texture=t1)
            mentions.add("texture")
        else:
            o0 = obj(0, b0, s0)
            o1 = obj(1, b1, s1, avoid={o0.color})
            mentions.add("color")
        objects = [o0, o1]
        if category == "shape" and rng.random() < 0.5:
            mentions.discard("color")
        prompt = f"{_np(o0, mentions)} and {_np(o1, mentions)}"
    elif category == "spatial":
        rel = rng.choice(["on the left of", "on the right of", "above", "below"])
        if rel in ("above", "below"):
            x = rng.uniform(0.25, 0.75)
            top = layout.place(*dims(0.85), (x, x), (0.14, 0.3))
            bot = layout.place(*dims(0.85), (x - 0.05, x + 0.05), (0.62, 0.84))
            subj_box, obj_box = (top, bot) if rel == "above" else (bot, top)
        else:
            yc = rng.uniform(*y_band)
            left = layout.place(*dims(), (0.12, 0.38), (yc, yc))
            right = layout.place(*dims(), (0.62, 0.88), (yc - 0.04, yc + 0.04))
            subj_box, obj_box = (left, right) if rel == "on the left of" else (right, left)
        o0 = obj(0, subj_box)
        o1 = obj(1, obj_box, shape=rng.choice([s for s in SHAPES if s != o0.shape]), avoid={o0.color})
        objects, relations = [o0, o1], [(0, rel, 1)]
        mentions.add("color")
        mentions.add("position")
        prompt = f"{_np(o0, mentions)} {rel} {_np(o1, mentions)}"
    elif category == "3d_spatial":
        rel = rng.choice(["in front of", "behind"])
        yc = rng.uniform(max(0.35, low), 0.7)
        xc = rng.uniform(0.3, 0.7)
        w_back, _ = dims(0.95)
        w_front = int(w_back * rng.uniform(1.2, 1.45))
        back = layout.place(w_back, w_back, (xc - 0.08, xc - 0.08), (yc - 0.06, yc - 0.06))
        layout.boxes.pop()  # the front object may overlap the back one
        dx = int(w_back * rng.choice([-0.45, 0.45]))
        fx0 = min(max(back[0] + dx - (w_front - w_back) // 2, 4), size - w_front - 4)
        fy0 = min(back[1] + int(w_back * 0.35), size - w_front - 4)
        front = (fx0, fy0, fx0 + w_front, fy0 + w_front)
        layout.boxes += [back, front]
        ob = obj(0, back, depth=0)
        of = obj(1, front, shape=rng.choice([s for s in SHAPES if s != ob.shape]), depth=1,
                 avoid={ob.color})
        objects = [ob, of]
        mentions.add("color")
        mentions.add("depth")
        if rel == "in front of":
            relations = [(1, rel, 0)]
            prompt = f"{_np(of, mentions)} in front of {_np(ob, mentions)}"
        else:
            relations = [(0, rel, 1)]
            prompt = f"{_np(ob, mentions)} behind {_np(of, mentions)}"
    elif category == "numeracy":
        groups = [(rng.randint(2, 4), rng.choice(SHAPES))]
        if rng.random() < 0.5:
            groups.append((rng.randint(1, 2), rng.choice([s for s in SHAPES if s != groups[0][1]])))
        used: set[str] = set()
        phrases = []
        for count, shape in groups:
            color = _pick_color(rng, bg_colors, used)
            used.add(color)
            w, h = dims(0.72)
            for _ in range(count):
                box = layout.place(w, h, (0.1, 0.9), (max(0.15, low - 0.15), 0.86), pad=8)
                objects.append(Obj(len(objects), shape, color, "plain", box))
            noun = shape + ("s" if count > 1 else "")
            phrases.append(f"{NUMBER_WORDS[count] if count > 1 else article(color)} {color} {noun}")
        mentions |= {"color", "count"}
        prompt = " and ".join(phrases)
    else:  # complex: attributes, a texture and a relation together
        yc = rng.uniform(max(0.55, low), 0.8)
        left = layout.place(*dims(), (0.12, 0.36), (yc, yc))
        right = layout.place(*dims(), (0.64, 0.88), (yc - 0.04, yc + 0.04))
        top = layout.place(*dims(0.75), (0.35, 0.65), (0.12, 0.3))
        o0 = obj(0, left, texture=rng.choice(TEXTURES[1:]))
        o1 = obj(1, right, shape=rng.choice([s for s in SHAPES if s != o0.shape]), avoid={o0.color})
        o2 = obj(2, top, avoid={o0.color, o1.color})
        objects = [o0, o1, o2]
        relations = [(0, "on the left of", 1), (2, "above", 0)]
        mentions |= {"color", "texture", "position"}
        prompt = (f"{_np(o0, mentions)} on the left of {_np(o1, mentions)}, "
                  f"with {_np(o2, mentions)} floating above them")
    return SceneSpec(category, bg.name, horizon, tuple(decor), tuple(objects), tuple(relations),
                     prompt, frozenset(mentions), size, None, tuple(objects))


def _np(o: Obj, mentions: set[str]) -> str:
    noun = o.noun(color="color" in mentions, texture="texture" in mentions)
    return f"{article(noun)} {noun}"


def _decor(rng: random.Random, kind: str, size: int, horizon: int, layout: _Layout):
    unit = size / 384
    out = []
    sky_y = (0.08, max(0.1, horizon / size * 0.45))
    if kind in ("sun", "moon_stars"):
        r = int(rng.uniform(26, 38) * unit)
        box = layout.place(r, r, rng.choice([(0.08, 0.25), (0.75, 0.92)]), sky_y, pad=2)
        out.append(("sun" if kind == "sun" else "moon", box))
        if kind == "moon_stars":
            for _ in range(rng.randint(5, 9)):
                x, y = int(rng.uniform(0.03, 0.97) * size), int(rng.uniform(0.02, 0.9) * horizon)
                out.append(("star", (x, y, x + 3, y + 3)))
    elif kind == "clouds":
        for _ in range(rng.randint(1, 3)):
            w = int(rng.uniform(50, 80) * unit)
            try:
                out.append(("cloud", layout.place(w, w // 2, (0.1, 0.9), sky_y, pad=4)))
            except _NoRoom:
                break
    elif kind == "window":
        w = int(rng.uniform(60, 90) * unit)
        out.append(("window", layout.place(w, int(w * 0.8), (0.2, 0.8), sky_y, pad=4)))
    elif kind == "snow":
        for _ in range(rng.randint(12, 20)):
            x, y = int(rng.uniform(0.02, 0.98) * size), int(rng.uniform(0.02, 0.95) * horizon)
            out.append(("flake", (x, y, x + 4, y + 4)))
    return out


def _with_defect(rng: random.Random, spec: SceneSpec) -> SceneSpec:
    """Choose one defect that contradicts the prompt and record what is drawn instead."""
    kinds = ["missing_object"]
    if "color" in spec.mentions:
        kinds.append("wrong_color")
    if "texture" in spec.mentions and any(o.texture != "plain" for o in spec.objects):
        kinds.append("wrong_texture")
    if "count" in spec.mentions:
        kinds.append("extra_object")
    horizontal = [r for r in spec.relations if r[1] in ("on the left of", "on the right of")]
    if horizontal:
        kinds.append("wrong_position")
    kind = rng.choice(kinds)
    drawn = list(spec.objects)
    bg = BACKGROUNDS[spec.background]
    if kind == "wrong_color":
        target = rng.choice([o for o in drawn if o.depth == max(x.depth for x in drawn)] if
                            spec.category == "3d_spatial" else drawn)
        new = _pick_color(rng, [bg.sky_top, bg.sky_bottom, bg.ground], {o.color for o in drawn})
        drawn[target.id] = replace(target, color=new)
        defect = DefectSpec(kind, target.id, target.color, new)
    elif kind == "wrong_texture":
        target = rng.choice([o for o in drawn if o.texture != "plain"])
        new = rng.choice([t for t in ("plain", "striped", "dotted", "checkered") if t != target.texture])
        drawn[target.id] = replace(target, texture=new)
        defect = DefectSpec(kind, target.id, target.texture, new)
    elif kind == "missing_object":
        target = rng.choice(drawn)
        drawn = [o for o in drawn if o.id != target.id]
        defect = DefectSpec(kind, target.id, target.noun(), "nothing")
    elif kind == "extra_object":
        target = rng.choice(drawn)
        layout = _Layout(rng, spec.size)
        layout.boxes = [o.box for o in drawn] + [b for kind, b in spec.decor if kind != "star"]
        w = target.box[2] - target.box[0]
        try:
            box = layout.place(w, w, (0.1, 0.9), (spec.horizon / spec.size, 0.86), pad=8)
        except _NoRoom:
            return spec
        extra = replace(target, id=len(drawn), box=box)
        drawn.append(extra)
        count = sum(1 for o in spec.objects if (o.shape, o.color) == (target.shape, target.color))
        defect = DefectSpec(kind, extra.id, f"{count} {target.shape}", f"{count + 1} {target.shape}")
    else:  # wrong_position: the two objects of a left/right relation swap places
        subj, _, other = horizontal[0]
        a, b = drawn[subj], drawn[other]
        drawn[subj] = replace(a, box=_moved(a.box, b.box))
        drawn[other] = replace(b, box=_moved(b.box, a.box))
        rel = horizontal[0][1]
        flipped = "on the right of" if rel == "on the left of" else "on the left of"
        defect = DefectSpec(kind, subj, rel, flipped)
    return replace(spec, defect=defect, drawn=tuple(drawn))


def _moved(box, to):
    """`box` moved so that it is centred where `to` is centred."""
    w, h = box[2] - box[0], box[3] - box[1]
    cx, cy = (to[0] + to[2]) // 2, (to[1] + to[3]) // 2
    return (cx - w // 2, cy - h // 2, cx - w // 2 + w, cy - h // 2 + h)


def scene_graph(spec: SceneSpec):
    """The `schemas.Scene` record of a spec (objects as asked; the defect as drawn)."""
    from schemas import Defect, Relation, Scene, SceneObject

    d = spec.defect
    return Scene(
        background=spec.background,
        objects=[SceneObject(id=o.id, shape=o.shape, color=o.color, texture=o.texture,
                             box=list(o.box), depth=o.depth) for o in spec.objects],
        relations=[Relation(subject=s, relation=r, object=o) for s, r, o in spec.relations],
        defect=Defect(kind=d.kind, object=d.object, expected=d.expected, actual=d.actual) if d else None,
    )
