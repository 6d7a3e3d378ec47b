"""What `twig generate` writes: one PNG and one JSON trace per prompt, and a contact sheet.

Files are written under a temporary name and renamed, so a killed run never leaves half a PNG, and
a trace records a digest of everything that decided its image: a rerun skips prompts whose trace
has the same digest and redraws the rest.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from sharding.atomic import write_bytes, write_json

KEPT, REDRAWN = (150, 150, 150), (220, 40, 40)


def stem(index: int) -> str:
    return f"{index:05d}"


def digest(parts: dict[str, Any]) -> str:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def is_done(out: Path, index: int, want: str) -> bool:
    trace = out / f"{stem(index)}.json"
    if not trace.is_file() or not (out / f"{stem(index)}.png").is_file():
        return False
    try:
        return json.loads(trace.read_text(encoding="utf-8")).get("digest") == want
    except ValueError:
        return False


def png_bytes(pixels) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def write_result(out: Path, index: int, pixels, trace: dict[str, Any]) -> None:
    """PNG first, trace last: a trace on disk means its image is complete."""
    write_bytes(out / f"{stem(index)}.png", png_bytes(pixels))
    write_json(out / f"{stem(index)}.json", trace)


def contact_sheet(out: Path, indices: list[int], thumb: int = 192) -> Path | None:
    """A grid of the images with their prompts; a bar at each image's left marks the bands
    (red where a reflection had the band drawn again)."""
    cells = []
    for i in indices:
        png, trace = out / f"{stem(i)}.png", out / f"{stem(i)}.json"
        if png.is_file() and trace.is_file():
            cells.append((Image.open(png).convert("RGB"), json.loads(trace.read_text(encoding="utf-8"))))
    if not cells:
        return None
    cols = math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / cols)
    bar, caption = 6, 30
    cw, ch = thumb + bar + 8, thumb + caption + 8
    sheet = Image.new("RGB", (cols * cw, rows * ch), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for n, (img, trace) in enumerate(cells):
        x, y = (n % cols) * cw + 4, (n // cols) * ch + 4
        sheet.paste(img.resize((thumb, thumb), Image.Resampling.BICUBIC), (x + bar, y))
        grid_rows = trace["image"]["grid"][0]
        for band in trace["bands"]:
            r0, r1 = band["rows"]
            color = REDRAWN if band["regenerated"] else KEPT
            draw.rectangle([x, y + r0 * thumb // grid_rows + 1, x + bar - 2, y + r1 * thumb // grid_rows - 2],
                           fill=color)
        text = f"{stem(trace['index'])} {trace['prompt']}"
        for line_no, line in enumerate(_wrap(draw, text, font, thumb + bar)[:2]):
            draw.text((x, y + thumb + 2 + 12 * line_no), line, fill="black", font=font)
    path = out / "contact_sheet.png"
    write_bytes(path, png_bytes(_to_array(sheet)))
    return path


def _to_array(img: Image.Image):
    import numpy as np

    return np.asarray(img)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width:
            line = trial
        else:
            if line:
                lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > 2:
        lines[1] = lines[1][: max(0, len(lines[1]) - 1)] + "…"
    return lines
