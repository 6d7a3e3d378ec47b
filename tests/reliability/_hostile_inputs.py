"""Builders for the hostile-input corpus (`test_hostile.py`): bad images, bad tars, bad prompt files.

Everything is made at test time in a temporary folder, small except the 10 MB metadata blocks.
The bad images of the foundation suite (`tests/pipeline/test_sources.py`) are built with its own
builders and come first; the new ones follow. Each entry says what a user must get: a record
(with a check on it) or a reject whose reason holds one of the given words.
"""

from __future__ import annotations

import io
import os
import random
import struct
import tarfile
import zipfile
from dataclasses import dataclass

from PIL import Image

from tests.pipeline.test_sources import (
    RED,
    add,
    halves,
    jpeg_bytes,
    png_bytes,
    png_header_only,
    textured,
    truncated_jpeg,
)

MAX_PIXELS, MAX_FILE_BYTES = 4_000_000, 12_000_000  # caps of the run (the big blocks fit under)
TEN_MB = 10 * 1024 * 1024
SVG = ('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
       'width="400" height="400"><rect width="400" height="400" fill="red"/></svg>\n')


@dataclass(frozen=True)
class Case:
    name: str  # file name (a tar member name for tar cases)
    data: bytes
    reject: tuple[str, ...] = ()  # words one of which the reject reason must hold; () = written
    top: tuple[int, int, int] | None = None  # for a written image: colour near the top centre


def jpeg_claiming(w: int, h: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) claims w x h pixels."""
    raw = bytearray(jpeg_bytes(textured(1, 64, 64)))
    i = raw.index(b"\xff\xc0")
    raw[i + 5 : i + 9] = struct.pack(">HH", h, w)
    return bytes(raw)


def animated(fmt: str) -> bytes:
    """Three frames, red then green then blue (the first frame is the one that counts)."""
    frames = [Image.new("RGB", (200, 200), c) for c in (RED, (30, 200, 30), (30, 30, 220))]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def zip_renamed() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("photo.jpg", jpeg_bytes(textured(2)))
    return buf.getvalue()


def big_exif_png() -> bytes:
    """A PNG with a 10 MB eXIf block that also says 'rotate 90 degrees clockwise' (6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x9286] = b"ASCII\0\0\0" + b"x" * TEN_MB  # UserComment
    return png_bytes(halves(400, 300), exif=exif.tobytes())


def big_icc(fmt: str) -> bytes:
    """A 10 MB ICC profile of noise: JPEG splits it over APP2 segments, PNG compresses it (iCCP)."""
    icc = os.urandom(TEN_MB)
    img = halves(400, 300)
    return jpeg_bytes(img, icc_profile=icc) if fmt == "JPEG" else png_bytes(img, icc_profile=icc)


def image_cases() -> list[Case]:
    """Foundation list first, then the new hostile images, then two good controls."""
    noise = textured(7, 64, 64)
    foundation = [
        Case("empty.jpg", b"", ("empty",)),
        Case("truncated.jpg", truncated_jpeg(), ("truncated", "cannot decode")),
        Case("notes.jpg", b"this is a text file, not a JPEG\n", ("not an image",)),
        Case("one_pixel.png", png_bytes(Image.new("RGB", (1, 1), RED)), ("too small",)),
        Case("strip.png", png_bytes(Image.new("L", (20000, 20), 128)), ("too small", "aspect")),
        Case("wide.png", png_bytes(Image.new("RGB", (1000, 200), RED)), ("aspect",)),
        Case("bomb_pixels.png", png_bytes(Image.new("L", (2100, 2000), 90)),
             ("too many pixels", "decompression bomb")),
        Case("bomb_huge.png", png_header_only(50000, 50000), ("decompression bomb", "too many pixels")),
        Case("big_file.png", png_bytes(noise) + b"\0" * (MAX_FILE_BYTES + 1), ("too large",)),
    ]
    new = [
        Case("huge_declared.png", png_header_only(100000, 100000),
             ("decompression bomb", "too many pixels")),
        Case("huge_declared.jpg", jpeg_claiming(65000, 65000), ("decompression bomb", "too many pixels")),
        Case("animated.gif", animated("GIF"), top=RED),  # decided: the first frame is the image
        Case("animated.png", animated("PNG"), top=RED),  # APNG, likewise
        Case("zip_renamed.jpg", zip_renamed(), ("a zip archive",)),
        Case("drawing.svg", SVG.encode(), ("svg vector drawing",)),
        Case("drawing_named.png", SVG.encode(), ("svg vector drawing",)),
        Case("page.jpg", b"<!DOCTYPE html><html><body>404 Not Found</body></html>", ("html page",)),
        Case("big_exif.png", big_exif_png(), top=RED),  # orientation 6: red left becomes red top
        Case("big_icc.jpg", big_icc("JPEG"), top=None),
        Case("big_icc.png", big_icc("PNG"), ("metadata block too large",)),
    ]
    good = [Case("good_a.png", png_bytes(textured(21))), Case("good_b.jpg", jpeg_bytes(textured(22)))]
    return foundation + new + good


# ----------------------------------------------------------------------------- tars

# keys that must survive as they are (the record's source uri holds them exactly)
ODD_KEYS = ["with space", "ünïcødé-猫", "new\nline", "per%cent", "q?uery#frag", "tab\there",
            "k" * 200, "dir.with.dots/k", "semi;colon|pipe", "back\\slash", "-dash", "emoji😀",
            "./dot/rel"]


def tar_cases(path) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Write a hostile tar; return ({key: prompt} expected written, {key: reason words} rejected)."""
    good: dict[str, str] = {}
    bad: dict[str, tuple[str, ...]] = {}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for i, key in enumerate(ODD_KEYS):
            add(tar, f"{key}.jpg", jpeg_bytes(textured(30 + i)))
            add(tar, f"{key}.txt", f"prompt {i}")
            good[key] = f"prompt {i}"
        add(tar, "../../x.jpg", jpeg_bytes(textured(50)))
        bad["../../x"] = ("escapes the archive",)
        add(tar, "a/../../y.jpg", jpeg_bytes(textured(51)))
        bad["a/../../y"] = ("escapes the archive",)
        add(tar, "/abs/z.jpg", jpeg_bytes(textured(52)))
        bad["/abs/z"] = ("absolute member path",)
        add(tar, "C:\\win\\w.jpg", jpeg_bytes(textured(53)))
        bad["C:\\win\\w"] = ("absolute member path",)
        add(tar, "link.jpg", kind=tarfile.SYMTYPE, link="../../outside.jpg")
        bad["link"] = ("not a regular file (link)",)
        add(tar, "etc_link.jpg", kind=tarfile.SYMTYPE, link="/etc/passwd")
        bad["etc_link"] = ("not a regular file (link)",)
        add(tar, "hard.jpg", kind=tarfile.LNKTYPE, link="with space.jpg")
        bad["hard"] = ("not a regular file (link)",)
        add(tar, "dev.jpg", kind=tarfile.CHRTYPE)
        bad["dev"] = ("not a regular file (special)",)
        add(tar, "fifo.jpg", kind=tarfile.FIFOTYPE)
        bad["fifo"] = ("not a regular file (special)",)
        add(tar, "dup.jpg", jpeg_bytes(textured(54)))
        add(tar, "dup.txt", "first")
        add(tar, "dup.jpg", jpeg_bytes(textured(55)))  # the same key twice in a row
        bad["dup"] = ("duplicate member",)
        add(tar, "apart.jpg", jpeg_bytes(textured(56)))
        add(tar, "between.jpg", jpeg_bytes(textured(57)))
        add(tar, "between.txt", "in between")
        good["between"] = "in between"
        add(tar, "apart.jpg", jpeg_bytes(textured(58)))  # the same key again, further on
        bad["apart"] = ("duplicate member",)
        add(tar, ".hidden.jpg", jpeg_bytes(textured(59)))
        bad[""] = ("empty sample key",)
        add(tar, "huge.jpg", b"\xff\xd8" + b"\0" * (2 * 1024 * 1024))
        bad["huge"] = ("too large",)
        add(tar, "anim.gif", animated("GIF"))
        add(tar, "anim.txt", "an animated gif")
        good["anim"] = "an animated gif"
        add(tar, "zip.jpg", zip_renamed())
        bad["zip"] = ("a zip archive",)
        add(tar, "noimg.txt", "a prompt without an image")
        bad["noimg"] = ("no image member",)
    return good, bad


# ----------------------------------------------------------------------------- prompt files

def prompt_file() -> tuple[bytes, dict[int, str], dict[int, tuple[str, ...]]]:
    """A hostile prompt file: (bytes, {line: prompt} expected written, {line: words} rejected).
    Blank lines are no inputs; line numbers are the ones an editor shows."""
    lines: list[bytes] = [
        "\ufeffa red apple on a plate".encode(),  # a byte-order mark before the first prompt
        b"",
        b"   \t ",
        b"a blue  bicycle\tby a wall\r",  # CRLF line end, whitespace runs
        b"x" * 100_000,  # a 100 KB line
        b"a green\x00kite",  # NUL
        b"\x1b[31ma red car\x1b[0m",  # terminal escape codes
        "a yellow\u2028lamp\x0cin a room".encode(),  # separators inside a line: one space
        b"",
        b"a purple boat",
    ]
    data = b"\n".join(lines) + b"\r" + b"an orange chair" + b"\n"  # a lone CR ends a line too
    good = {1: "a red apple on a plate", 4: "a blue bicycle by a wall",
            8: "a yellow lamp in a room", 10: "a purple boat", 11: "an orange chair"}
    bad = {5: ("prompt_too_long",), 6: ("control characters",), 7: ("control characters",)}
    return data, good, bad


# ----------------------------------------------------------------------------- fuzzed images

def _seed_images() -> dict[str, bytes]:
    """Small valid files in every format the sources list, in ordinary and odd modes."""
    out: dict[str, bytes] = {}
    base = textured(3, 160, 120)
    for img, tag in ((base, "rgb"), (base.convert("RGBA"), "rgba"), (base.convert("L"), "l"),
                     (base.convert("P"), "p"), (base.convert("CMYK"), "cmyk"),
                     (base.convert("1"), "bw")):
        for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp"),
                         ("BMP", "bmp"), ("TIFF", "tif")):
            buf = io.BytesIO()
            try:
                img.save(buf, fmt)
            except (OSError, ValueError):  # a mode the format cannot hold
                continue
            out[f"{tag}.{ext}"] = buf.getvalue()
    return out


def fuzzed_images(seed: int, n: int) -> list[tuple[str, bytes]]:
    """n seeded mutations of valid images: bit flips, header bytes set to 0/255, truncation,
    repeated runs, dimension fields overwritten; (file name with the seed's extension, bytes)."""
    rng = random.Random(seed)
    seeds = _seed_images()
    names = sorted(seeds)
    out = []
    for i in range(n):
        name = names[rng.randrange(len(names))]
        d = bytearray(seeds[name])
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(5)
            if op == 0 and d:
                for _ in range(rng.randint(1, 16)):
                    j = rng.randrange(len(d))
                    d[j] ^= 1 << rng.randrange(8)
            elif op == 1 and d:
                d[rng.randrange(min(len(d), 64))] = rng.choice([0, 0xFF, 0x7F, 0x80])
            elif op == 2:
                d = d[: rng.randrange(len(d) + 1)]
            elif op == 3 and len(d) > 8:
                j = rng.randrange(len(d))
                d[j:j] = d[j : j + rng.randint(1, 256)] * rng.randint(1, 8)
            elif op == 4 and len(d) > 30:
                j = rng.randrange(8, min(len(d), 40))
                d[j : j + 2] = rng.choice([b"\xff\xff", b"\x00\x00", b"\x7f\xff"])
        out.append((f"fuzz_{i:05d}_{name.replace('.', '_')}.{name.rsplit('.', 1)[1]}", bytes(d)))
    return out
