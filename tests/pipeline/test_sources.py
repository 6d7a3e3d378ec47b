"""Real inputs: a folder of hostile files, sidecar prompts, WebDataset tars, and config mistakes.

Every input is built in tmp_path at test time and run through the real pipeline (`driver.build`);
the checks read back what a user would read: shards, rejects/*.jsonl and manifest.json.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import ConfigError, load_config
from pipeline.driver import build, plan_for
from pipeline.finalize import finalize
from pipeline.runner import UnitRunner
from schemas import load_record
from sharding.reader import iter_samples
from sharding.validate import validate_dataset

RED, BLUE, WHITE = (220, 30, 30), (30, 30, 220), (255, 255, 255)


# ----------------------------------------------------------------------------- input builders


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def halves(w: int, h: int, left=RED, right=BLUE) -> Image.Image:
    """Left half one colour, right half another: any rotation or flip shows in the output."""
    arr = np.empty((h, w, 3), np.uint8)
    arr[:, : w // 2] = left
    arr[:, w // 2 :] = right
    return Image.fromarray(arr, "RGB")


def textured(seed: int, w: int = 320, h: int = 256) -> Image.Image:
    """A distinct, non-flat image per seed (so no two good images look alike)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize((w, h), Image.Resampling.NEAREST)


def exif_jpeg(orientation: int) -> bytes:
    """A 2400x1200 landscape stored with an EXIF orientation tag (5..8 swap width and height)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg_bytes(halves(2400, 1200), exif=exif.tobytes())


def png_header_only(w: int, h: int) -> bytes:
    """A tiny PNG that claims w x h pixels (a decompression bomb needs no real pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\0" * (w + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def palette_with_transparency() -> bytes:
    """300x300 palette PNG: left half index 0 (black, fully transparent), right half red."""
    idx = np.zeros((300, 300), np.uint8)
    idx[:, 150:] = 1
    img = Image.fromarray(idx, "L").convert("P")
    img.putpalette([0, 0, 0, *RED] + [0] * (254 * 3))
    return png_bytes(img, transparency=0)


def rgb_color_key() -> bytes:
    """300x300 RGB PNG whose tRNS chunk makes pure black transparent: left half black, right red."""
    return png_bytes(halves(300, 300, left=(0, 0, 0), right=RED), transparency=(0, 0, 0))


def gray16() -> bytes:
    """16-bit grayscale PNG (mode I;16): left half 16384 (1/4 scale), right half 49152 (3/4)."""
    arr = np.full((256, 256), 16384, np.uint16)
    arr[:, 128:] = 49152
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    return png_bytes(img)


def cmyk_jpeg() -> bytes:
    return jpeg_bytes(Image.new("CMYK", (300, 300), (0, 255, 255, 0)))  # pure red in CMYK


def truncated_jpeg() -> bytes:
    whole = jpeg_bytes(textured(99, 512, 512))
    return whole[: len(whole) // 3]


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- reading the output


def build_with(out: Path, *sets: str):
    """The real pipeline, one worker, small units; later settings win."""
    config = load_config(None, [f"run.out={out}", "run.progress=false", "run.workers=1",
                                "shard.max_records=8", *sets])
    return build(config)


def run(out: Path, *sets: str):
    """A build that stops after prepare."""
    return build_with(out, "until=prepare", *sets)


def written(out: Path) -> dict[str, tuple]:
    """{source uri: (record, decoded image, image format)} for every record in the shards."""
    manifest = json.loads((out / "manifest.json").read_text())
    got = {}
    for shard in manifest["shards"]:
        for s in iter_samples(out / shard["path"]):
            rec = load_record(s["json"])
            img = Image.open(io.BytesIO(s["jpg"]))
            fmt = img.format
            img.load()
            assert rec.source.uri not in got, f"{rec.source.uri} written twice"
            got[rec.source.uri] = (rec, img, fmt)
    return got


def rejects(out: Path) -> list[dict]:
    rows = []
    for p in sorted((out / "rejects").glob("*.jsonl")):
        rows += [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line]
    return rows


def near(pixel, expected, tol: int = 40) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected, strict=True))


def check_funnel(out: Path, n_inputs: int) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["counts"]
    assert c["read"] == n_inputs
    assert c["read"] == c["written"] + c["rejected"]
    assert c["written"] == len(written(out))
    assert c["rejected"] == len(rejects(out))
    report = validate_dataset(out)
    assert report.ok, report.summary()
    return manifest


# ----------------------------------------------------------------------------- 1. hostile folder

# file -> words one of which the reject reason must contain
BAD = {
    "bad/empty.jpg": ("empty",),
    "bad/truncated.jpg": ("truncated", "cannot decode"),
    "bad/notes.jpg": ("not an image",),
    "bad/one_pixel.png": ("too small",),
    "bad/strip.png": ("too small", "aspect"),
    "bad/wide.png": ("aspect",),
    "bad/bomb_pixels.png": ("too many pixels", "decompression bomb"),
    "bad/bomb_huge.png": ("decompression bomb", "too many pixels"),
    "bad/big_file.png": ("too large",),
}


def hostile_sets(src: Path) -> list[str]:
    """Lower pixel and file-size caps so the bomb and the big file can stay small and fast."""
    return ["source.kind=folder", f"source.path={src}", "image.max_pixels=4000000",
            "image.max_file_bytes=1000000"]


@pytest.fixture(scope="module")
def hostile_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    src = root / "images"
    write(src / "bad/empty.jpg", b"")
    write(src / "bad/truncated.jpg", truncated_jpeg())
    write(src / "bad/notes.jpg", "this is a text file, not a JPEG\n")
    write(src / "bad/one_pixel.png", png_bytes(Image.new("RGB", (1, 1), RED)))
    write(src / "bad/strip.png", png_bytes(Image.new("L", (20000, 20), 128)))
    write(src / "bad/wide.png", png_bytes(Image.new("RGB", (1000, 200), RED)))
    # over image.max_pixels (set to 4M below) but a small file: one flat colour
    write(src / "bad/bomb_pixels.png", png_bytes(Image.new("L", (2100, 2000), 90)))
    # claims 50000x50000 (2.5 gigapixels) in under 1 KB
    write(src / "bad/bomb_huge.png", png_header_only(50000, 50000))
    noise = np.random.default_rng(0).integers(0, 256, (600, 700, 3), dtype=np.uint8)
    write(src / "bad/big_file.png", png_bytes(Image.fromarray(noise, "RGB")))  # > max_file_bytes
    write(src / "odd/cmyk.jpg", cmyk_jpeg())
    write(src / "odd/gray16.png", gray16())
    write(src / "odd/palette.png", palette_with_transparency())
    write(src / "odd/rgb_key.png", rgb_color_key())
    write(src / "odd/exif6.jpg", exif_jpeg(6))
    write(src / "odd/exif8.jpg", exif_jpeg(8))
    for i in range(3):
        write(src / f"nested/deeper/good_{i}.png", png_bytes(textured(i)))
        write(src / f"nested/deeper/good_{i}.txt", f"  a  good\nimage   number {i} \n")
    write(src / "nested/README.md", "not an input")  # not an image extension: not read
    out = root / "out"
    result = run(out, *hostile_sets(src))
    return out, result


def test_folder_with_hostile_files_completes_and_validates(hostile_build):
    out, result = hostile_build
    assert result.manifest is not None and not result.up_to_date
    manifest = check_funnel(out, n_inputs=len(BAD) + 6 + 3)
    assert manifest["counts"]["written"] == 6 + 3 and manifest["counts"]["rejected"] == len(BAD)
    assert manifest["until"] == "prepare" and manifest["complete"] is False
    for uri, (rec, img, fmt) in written(out).items():
        assert fmt == "JPEG", uri
        assert img.size == (384, 384) and img.mode == "RGB", uri
        assert (rec.image.width, rec.image.height) == (384, 384)


def test_folder_bad_files_are_rejected_once_with_a_reason(hostile_build):
    out, _ = hostile_build
    rows = rejects(out)
    counts = Counter(r["uri"] for r in rows)
    assert set(counts) == {f"folder://{name}" for name in BAD}, rows
    assert all(n == 1 for n in counts.values()), counts
    for r in rows:
        words = BAD[r["uri"].removeprefix("folder://")]
        assert any(w in r["reason"].lower() for w in words), r
        assert r["stage"] in ("read", "prepare") and r["split"] in ("train", "val")
    assert not any(r["uri"].startswith(("folder://odd/", "folder://nested/")) for r in rows)


def test_folder_odd_modes_are_normalised(hostile_build):
    out, _ = hostile_build
    got = written(out)
    # CMYK JPEG: red stays red (not inverted, not washed out)
    _, cmyk, _ = got["folder://odd/cmyk.jpg"]
    assert near(cmyk.getpixel((192, 192)), (255, 0, 0)), cmyk.getpixel((192, 192))
    # 16-bit gray is scaled, not clipped: 1/4 and 3/4 of 65535 stay ~64 and ~191, not white
    _, g16, _ = got["folder://odd/gray16.png"]
    left, right = g16.getpixel((60, 192)), g16.getpixel((320, 192))
    assert near(left, (64, 64, 64), 8), left
    assert near(right, (191, 191, 191), 8), right
    # palette with a transparent index: transparent half is white, opaque half keeps its colour
    _, pal, _ = got["folder://odd/palette.png"]
    assert near(pal.getpixel((40, 192)), WHITE, 10), pal.getpixel((40, 192))
    assert near(pal.getpixel((340, 192)), RED), pal.getpixel((340, 192))
    # RGB PNG with a colour key (tRNS): the keyed colour is transparent too, so white, not black
    _, key, _ = got["folder://odd/rgb_key.png"]
    assert near(key.getpixel((40, 192)), WHITE, 10), key.getpixel((40, 192))
    assert near(key.getpixel((340, 192)), RED), key.getpixel((340, 192))


@pytest.mark.parametrize("name, top, bottom", [("exif6.jpg", RED, BLUE), ("exif8.jpg", BLUE, RED)])
def test_folder_exif_orientation_is_applied(hostile_build, name, top, bottom):
    """Stored 2400x1200 with red left, blue right. Orientation 6 turns it 90 degrees clockwise
    (red on top), 8 counter-clockwise (red at the bottom); unrotated it would be red left."""
    out, _ = hostile_build
    _, img, _ = written(out)[f"folder://odd/{name}"]
    for x in (60, 320):
        assert near(img.getpixel((x, 60)), top), (name, x, img.getpixel((x, 60)))
        assert near(img.getpixel((x, 320)), bottom), (name, x, img.getpixel((x, 320)))


def test_folder_nested_good_images_keep_their_sidecar_prompt(hostile_build):
    out, _ = hostile_build
    got = written(out)
    for i in range(3):
        rec, _, _ = got[f"folder://nested/deeper/good_{i}.png"]
        assert rec.prompt == f"a good image number {i}"
        assert rec.source.kind == "folder"
    assert not any("README" in uri for uri in got)


def test_folder_rebuild_is_up_to_date(hostile_build):
    out, first = hostile_build
    again = run(out, *hostile_sets(out.parent / "images"))
    assert again.up_to_date and again.ran == 0
    assert again.manifest["counts"] == first.manifest["counts"]


def test_folder_file_removed_after_planning_is_a_reject_not_a_crash(tmp_path):
    """A long build over a live folder: files vanish between the plan and their unit."""
    src = tmp_path / "images"
    for i in range(4):
        write(src / f"img_{i}.png", png_bytes(textured(40 + i)))
    config = load_config(None, ["source.kind=folder", f"source.path={src}", "until=prepare",
                                f"run.out={tmp_path / 'out'}", "run.progress=false",
                                "run.workers=1"])
    units = plan_for(config)
    (src / "img_2.png").unlink()
    runner = UnitRunner(config, tmp_path / "out")
    for unit in units:
        runner.run(unit)
    manifest = finalize(runner, units)
    assert manifest["counts"] == {"read": 4, "written": 3, "rejected": 1, "tasks": 0}
    [row] = rejects(tmp_path / "out")
    assert row["uri"] == "folder://img_2.png" and "cannot read file" in row["reason"]
    assert validate_dataset(tmp_path / "out").ok


# ----------------------------------------------------------------------------- 2. sidecar prompts


def test_folder_sidecar_prompts_through_segment(tmp_path):
    src = tmp_path / "images"
    write(src / "a.png", png_bytes(textured(1)))
    write(src / "a.txt", "a red   cube\non a table\n")
    write(src / "b.png", png_bytes(textured(2)))
    write(src / "b.json", json.dumps({"prompt": "two blue spheres", "category": "numeracy",
                                      "license": "cc0-1.0"}))
    write(src / "sub/c.jpg", jpeg_bytes(textured(3)))
    write(src / "sub/c.json", json.dumps({"caption": "a striped cat"}))
    write(src / "no_sidecar.png", png_bytes(textured(4)))
    write(src / "blank.png", png_bytes(textured(5)))
    write(src / "blank.txt", "   \n\t\n")
    write(src / "broken.png", png_bytes(textured(6)))
    write(src / "broken.json", "{not json")
    write(src / "latin1.png", png_bytes(textured(7)))
    write(src / "latin1.txt", "caf\xe9".encode("latin-1"))
    out = tmp_path / "out"
    build_with(out, "source.kind=folder", f"source.path={src}", "annotate.caption=sidecar",
               "until=segment", "source.license=cc-by-4.0")
    check_funnel(out, n_inputs=7)

    got = written(out)
    assert set(got) == {"folder://a.png", "folder://b.png", "folder://sub/c.jpg"}
    a, b, c = (got[u][0] for u in ("folder://a.png", "folder://b.png", "folder://sub/c.jpg"))
    assert a.prompt == "a red cube on a table"
    assert b.prompt == "two blue spheres" and b.category == "numeracy"
    assert b.source.license == "cc0-1.0" and a.source.license == "cc-by-4.0"
    assert c.prompt == "a striped cat"
    for rec in (a, b, c):
        assert rec.teacher.caption.backend == "sidecar"
        assert len(rec.regions) == 3
        assert rec.regions[0].rows[0] == 0 and rec.regions[-1].rows[1] == 24

    reasons = {r["uri"]: r["reason"] for r in rejects(out)}
    assert set(reasons) == {"folder://no_sidecar.png", "folder://blank.png",
                            "folder://broken.png", "folder://latin1.png"}
    assert "no prompt" in reasons["folder://no_sidecar.png"]
    assert "sidecar" in reasons["folder://no_sidecar.png"]
    assert "no prompt" in reasons["folder://blank.png"]
    assert "broken.json" in reasons["folder://broken.png"] and "JSON" in reasons["folder://broken.png"]
    assert "latin1.txt" in reasons["folder://latin1.png"] and "UTF-8" in reasons["folder://latin1.png"]


# ----------------------------------------------------------------------------- 3. WebDataset tars


def add(tar: tarfile.TarFile, name: str, data: bytes | str | None = None, *,
        kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    if isinstance(data, str):
        data = data.encode()
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def hostile_tar(path: Path) -> None:
    with tarfile.open(path, "w") as tar:
        add(tar, "good1.jpg", jpeg_bytes(textured(11)))
        add(tar, "good1.txt", "a good one")
        add(tar, "good2.png", png_bytes(textured(12)))
        add(tar, "good2.json", json.dumps({"prompt": "the second", "category": "color"}))
        add(tar, "sub", kind=tarfile.DIRTYPE)  # ordinary directory entry (tar cf x.tar sub/)
        add(tar, "sub/good3.jpg", jpeg_bytes(textured(13)))
        add(tar, "sub/good3.txt", "third, in a folder")
        add(tar, "../../x.jpg", jpeg_bytes(textured(14)))
        add(tar, "../../x.txt", "escapes")
        add(tar, "/abs/evil.jpg", jpeg_bytes(textured(15)))
        add(tar, "link.jpg", kind=tarfile.SYMTYPE, link="../../outside.jpg")
        add(tar, "hard.jpg", kind=tarfile.LNKTYPE, link="good1.jpg")
        add(tar, "dup.jpg", jpeg_bytes(textured(16)))
        add(tar, "dup.txt", "first")
        add(tar, "dup.jpg", jpeg_bytes(textured(17)))
        add(tar, "noimg.txt", "a prompt without an image")
        add(tar, "notimage.jpg", "plain text pretending to be a JPEG")


def second_tar(path: Path) -> None:
    with tarfile.open(path, "w") as tar:
        add(tar, "good4.png", png_bytes(textured(18)))
        add(tar, "good4.txt", "from the second tar")
        add(tar, "GOOD5.JPG", jpeg_bytes(textured(19)))  # upper-case extensions (cameras)
        add(tar, "GOOD5.TXT", "upper case")


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if not p.is_dir()}


def test_webdataset_source_rejects_unsafe_members_and_writes_nothing_outside(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    hostile_tar(data / "part-0.tar")
    second_tar(data / "part-1.tar")
    cwd = tmp_path / "cwd" / "a" / "b"  # '../../x.jpg' extracted here would land in tmp_path/cwd
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    before = all_files(tmp_path)
    out = tmp_path / "out"
    pattern = f"{data}/part-{{0..1}}.tar"
    result = run(out, "source.kind=webdataset", f"source.urls=['{pattern}']")
    assert result.manifest is not None

    new = all_files(tmp_path) - before
    assert new and all(out in p.parents for p in new), sorted(map(str, new))
    assert not list((tmp_path / "cwd").rglob("*.jpg")) and not (tmp_path / "outside.jpg").exists()

    t0, t1 = f"{data}/part-0.tar", f"{data}/part-1.tar"
    got = written(out)
    assert set(got) == {f"{t0}#good1", f"{t0}#good2", f"{t0}#sub/good3", f"{t1}#good4",
                        f"{t1}#GOOD5"}
    assert got[f"{t0}#good1"][0].prompt == "a good one"
    assert got[f"{t0}#good2"][0].prompt == "the second"
    assert got[f"{t0}#good2"][0].category == "color"
    assert got[f"{t0}#sub/good3"][0].prompt == "third, in a folder"
    assert got[f"{t1}#good4"][0].prompt == "from the second tar"
    assert got[f"{t1}#GOOD5"][0].prompt == "upper case"
    for rec, img, fmt in got.values():
        assert rec.source.kind == "webdataset"
        assert fmt == "JPEG" and img.size == (384, 384)

    rows = rejects(out)
    counts = Counter(r["uri"] for r in rows)
    assert all(n == 1 for n in counts.values()), counts
    reasons = {r["uri"].removeprefix(f"{t0}#"): r["reason"] for r in rows}
    expected = {
        "../../x": "escapes the archive",
        "/abs/evil": "absolute member path",
        "link": "not a regular file (link)",
        "hard": "not a regular file (link)",
        "dup": "duplicate member",
        "noimg": "no image member",
        "notimage": "not an image",
    }
    assert set(reasons) == set(expected), reasons
    for key, words in expected.items():
        assert words in reasons[key], (key, reasons[key])
    check_funnel(out, n_inputs=len(expected) + 5)


def test_webdataset_unreadable_tar_is_a_config_error(tmp_path):
    bad = write(tmp_path / "broken.tar", b"this is not a tar archive at all" * 40)
    with pytest.raises(ConfigError, match="cannot read tar"):
        run(tmp_path / "out", "source.kind=webdataset", f"source.urls=['{bad}']")
    with pytest.raises(ConfigError, match="cannot read tar"):
        run(tmp_path / "out", "source.kind=webdataset", f"source.urls=['{tmp_path}/missing.tar']")
    assert not (tmp_path / "out" / "manifest.json").exists()


# ----------------------------------------------------------------------------- 4. config mistakes


@pytest.mark.parametrize("sets, words", [
    (["source.bogus=1"], ["source.bogus", "unknown key"]),
    (["imgae.size=384"], ["imgae", "unknown key"]),
    (["image.size=big"], ["image.size", "integer"]),
    (["run.workers=[1, 2]"], ["run.workers"]),
    (["source.urls=notalist", "source.kind=webdataset"], ["source.urls", "list"]),
    (["source.kind=folder", "until=prepare"], ["source.path is required"]),
    (["source.kind=webdataset", "until=prepare"], ["source.urls is required"]),
    (["source.kind=folder", "source.path=/x", "annotate.caption=sidecar", "until=guide"],
     ["teacher.guide needs a model", "teacher.model"]),
    (["source.kind=webdataset", "source.urls=['a.tar']", "annotate.caption=sidecar"],
     ["teacher.guide needs a model"]),
    (["source.kind=folder", "source.path=/x", "annotate.caption=scene", "until=caption"],
     ["needs the synthetic source", "annotate.caption=teacher or sidecar"]),
    (["source.kind=prompts"], ["source.prompts is required"]),
    (["source.kind=prompts", "source.prompts=['p.txt']", "teacher.model=m", "segment.mode=adaptive"],
     ["segment.mode must be uniform"]),
    (["source.kind=prompts", "source.prompts=['p.txt']", "teacher.model=m", "until=caption"],
     ["not a stage of the prompt-first recipe"]),
    (["teacher.model=m", "annotate.reflect=teacher", "teacher.reflect.endpoint=vllm"],
     ["endpoint 'vllm' is not in endpoints"]),
    (["source.kind=flickr"], ["source.kind"]),
    (["image.size=100"], ["multiple of image.grid"]),
    (["until=everything"], ["until"]),
    (["source"], ["key=value"]),
])
def test_config_mistakes_are_clear_config_errors(sets, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, sets)
    msg = str(e.value)
    for w in words:
        assert w in msg, msg
    assert "Traceback" not in msg and "pydantic" not in msg.lower()


def test_folder_path_that_is_not_a_folder_is_a_config_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match="not a folder"):
        run(tmp_path / "out", "source.kind=folder", f"source.path={missing}")
    write(tmp_path / "empty" / "notes.txt", "no images here")
    with pytest.raises(ConfigError, match="no inputs"):
        run(tmp_path / "out", "source.kind=folder", f"source.path={tmp_path / 'empty'}")
