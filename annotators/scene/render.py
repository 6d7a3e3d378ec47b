"""Draw a SceneSpec with Pillow: background, decorations, then objects (with any defect) by depth."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from annotators.scene.grammar import Obj, SceneSpec
from annotators.scene.vocab import BACKGROUNDS, COLORS


def render_scene(spec: SceneSpec) -> Image.Image:
    """The RGB image of the scene as drawn (the defect included)."""
    s = spec.size
    bg = BACKGROUNDS[spec.background]
    canvas = np.empty((s, s, 3), dtype=np.uint8)
    h = max(spec.horizon, 1)
    t = np.linspace(0.0, 1.0, h)[:, None]
    sky = (1 - t) * np.array(bg.sky_top) + t * np.array(bg.sky_bottom)
    canvas[:h] = sky[:, None, :].astype(np.uint8)
    g = np.linspace(1.0, 0.82, s - h)[:, None] * np.array(bg.ground)
    canvas[h:] = np.clip(g, 0, 255)[:, None, :].astype(np.uint8)
    img = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(img)
    _ground_pattern(draw, bg.ground_pattern, bg.ground, s, h)
    for kind, box in spec.decor:
        _decor(draw, kind, box)
    for obj in sorted(spec.drawn, key=lambda o: (o.depth, o.id)):
        _object(img, obj)
    return img


def _shade(rgb, f: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * f))) for c in rgb)


def _ground_pattern(draw: ImageDraw.ImageDraw, kind: str, color, s: int, h: int) -> None:
    if kind == "planks":
        for y in range(h + 18, s, 22):
            draw.line([(0, y), (s, y)], fill=_shade(color, 0.75), width=2)
    elif kind == "waves":
        for y in range(h + 14, s, 20):
            pts = [(x, y + 4 * math.sin(x / 14 + y)) for x in range(0, s + 8, 8)]
            draw.line(pts, fill=_shade(color, 1.35), width=2)
    elif kind == "tufts":
        for i in range(28):
            x = (i * 97) % s
            y = h + 10 + (i * 53) % max(1, s - h - 14)
            draw.line([(x, y), (x + 3, y - 7), (x + 6, y)], fill=_shade(color, 0.7), width=2)


def _decor(draw: ImageDraw.ImageDraw, kind: str, box) -> None:
    if kind == "sun":
        draw.ellipse(box, fill=(255, 214, 64), outline=(250, 170, 40), width=2)
    elif kind == "moon":
        draw.ellipse(box, fill=(240, 240, 210))
    elif kind == "star":
        draw.rectangle(box, fill=(255, 255, 230))
    elif kind == "flake":
        draw.ellipse(box, fill=(255, 255, 255))
    elif kind == "cloud":
        x0, y0, x1, y1 = box
        w, hh = x1 - x0, y1 - y0
        for dx, dy, r in ((0.25, 0.55, 0.3), (0.5, 0.4, 0.38), (0.75, 0.58, 0.28)):
            cx, cy, rr = x0 + dx * w, y0 + dy * hh, r * w / 1.6
            draw.ellipse((cx - rr, cy - rr * 0.7, cx + rr, cy + rr * 0.7), fill=(250, 250, 252))
    elif kind == "window":
        x0, y0, x1, y1 = box
        draw.rectangle(box, fill=(170, 210, 240), outline=(110, 80, 50), width=4)
        draw.line([((x0 + x1) // 2, y0), ((x0 + x1) // 2, y1)], fill=(110, 80, 50), width=3)
        draw.line([(x0, (y0 + y1) // 2), (x1, (y0 + y1) // 2)], fill=(110, 80, 50), width=3)


def shape_polygon(shape: str, w: int, h: int) -> list[tuple[float, float]] | None:
    """Polygon of a shape inside a w x h box (None for the circle, drawn as an ellipse)."""
    cx, cy, rx, ry = w / 2, h / 2, w / 2 - 1, h / 2 - 1

    def ring(n: int, start: float, radii=(1.0,)) -> list[tuple[float, float]]:
        pts = []
        for i in range(n * len(radii)):
            a = start + 2 * math.pi * i / (n * len(radii))
            r = radii[i % len(radii)]
            pts.append((cx + rx * r * math.cos(a), cy + ry * r * math.sin(a)))
        return pts

    if shape == "circle":
        return None
    if shape == "square":
        return [(1, 1), (w - 2, 1), (w - 2, h - 2), (1, h - 2)]
    if shape == "triangle":
        return [(cx, 1), (w - 2, h - 2), (1, h - 2)]
    if shape == "diamond":
        return [(cx, 1), (w - 2, cy), (cx, h - 2), (1, cy)]
    if shape == "hexagon":
        return ring(6, 0.0)
    if shape == "pentagon":
        return ring(5, -math.pi / 2)
    if shape == "star":
        return ring(5, -math.pi / 2, radii=(1.0, 0.45))
    raise ValueError(f"unknown shape {shape!r}")


def shape_mask(shape: str, w: int, h: int) -> Image.Image:
    """An L-mode mask (255 inside) of a shape filling a w x h box, as the renderer draws it."""
    mask = Image.new("L", (w, h), 0)
    md = ImageDraw.Draw(mask)
    poly = shape_polygon(shape, w, h)
    if poly is None:
        md.ellipse((1, 1, w - 2, h - 2), fill=255)
    else:
        md.polygon(poly, fill=255)
    return mask


def _object(img: Image.Image, obj: Obj) -> None:
    x0, y0, x1, y1 = obj.box
    w, h = x1 - x0, y1 - y0
    color = COLORS[obj.color]
    mask = shape_mask(obj.shape, w, h)
    poly = shape_polygon(obj.shape, w, h)
    fill = Image.new("RGB", (w, h), color)
    if obj.texture != "plain":
        ink = (250, 250, 250) if sum(color) < 300 else _shade(color, 0.45)
        fd = ImageDraw.Draw(fill)
        step = max(8, w // 7)
        if obj.texture == "striped":
            for x in range(-h, w, step):
                fd.line([(x, h), (x + h, 0)], fill=ink, width=max(3, step // 3))
        elif obj.texture == "dotted":
            r = max(2, step // 4)
            for yy in range(step // 2, h, step):
                for xx in range(step // 2 + (yy // step % 2) * step // 2, w, step):
                    fd.ellipse((xx - r, yy - r, xx + r, yy + r), fill=ink)
        elif obj.texture == "checkered":
            for yy in range(0, h, step):
                for xx in range(0, w, step):
                    if (xx // step + yy // step) % 2:
                        fd.rectangle((xx, yy, xx + step - 1, yy + step - 1), fill=ink)
    img.paste(fill, (x0, y0), mask)
    outline = ImageDraw.Draw(img)
    edge = _shade(color, 0.55) if sum(color) > 120 else (90, 90, 90)
    if poly is None:
        outline.ellipse((x0 + 1, y0 + 1, x1 - 2, y1 - 2), outline=edge, width=2)
    else:
        outline.polygon([(x0 + px, y0 + py) for px, py in poly], outline=edge, width=2)
