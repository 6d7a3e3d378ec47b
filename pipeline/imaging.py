"""Image decoding that survives hostile files, orientation, mode normalisation, resizing, pHash."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.record import Reject


def open_checked(raw: bytes, *, max_pixels: int, min_side: int, max_aspect: float,
                 target: int | None = None) -> Image.Image:
    """Decode bytes into an oriented image in RGB, or raise Reject with the reason."""
    if not raw:
        raise Reject("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pillow on corrupt metadata: not ours
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
            w, h = img.size
            if w * h > max_pixels:
                raise Reject(f"too many pixels ({w}x{h} > {max_pixels}): possible decompression bomb")
            if min(w, h) < min_side:
                raise Reject(f"too small ({w}x{h}, min side {min_side})")
            if max(w, h) / min(w, h) > max_aspect:
                raise Reject(f"aspect ratio too extreme ({w}x{h} > {max_aspect}:1)")
            if target and img.format == "JPEG":
                img.draft(None, (target, target))  # DCT-domain downscale, orientation-neutral
            img.load()
    except Reject:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise Reject(f"decompression bomb refused: {e}") from None
    except UnidentifiedImageError:
        raise Reject(f"not an image ({sniff(raw)})") from None
    except ValueError as e:
        if "Decompressed data too large" in str(e):  # Pillow's guard on PNG text/ICC chunks
            raise Reject("metadata block too large (a PNG text or ICC chunk decompresses past "
                         "Pillow's safety limit): possible decompression bomb") from None
        raise Reject(f"cannot decode image: {e}") from None
    except (OSError, SyntaxError, EOFError) as e:
        raise Reject(f"cannot decode image: {e}") from None
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        img = ImageOps.exif_transpose(img)  # a broken EXIF block should not lose a good image
    return to_rgb(img)


def sniff(raw: bytes) -> str:
    """What a file that is no image Pillow reads seems to be, for the reject reason."""
    head = raw[:1024].lstrip().lower()
    if raw.startswith(b"PK\x03\x04"):
        return "a zip archive"
    if raw.startswith(b"\x1f\x8b"):
        return "a gzip file"
    if raw.startswith(b"%PDF"):
        return "a PDF document"
    if b"<svg" in raw[:4096].lower():
        return "an SVG vector drawing; rasterise it to PNG first"
    if head.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if raw[4:8] == b"ftyp" and raw[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1"):
        return "a HEIC/HEIF image, which this build cannot decode; convert it to JPEG or PNG"
    try:
        raw[:4096].decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < 4092:  # not just a character cut at the end of the sample
            return "unrecognised format"
    return "a text file"


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB with alpha composited on white, 16-bit scaled (not clipped), CMYK converted."""
    mode = img.mode
    if mode in ("RGB", "L", "P") and "transparency" in img.info:  # PNG tRNS: a colour key is alpha
        img, mode = img.convert("RGBA"), "RGBA"
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB")


def fit(img: Image.Image, size: int, mode: str) -> Image.Image:
    """Resize to size x size: center crop (default) or pad with white."""
    if img.size == (size, size):
        return img
    if mode == "pad":
        return ImageOps.pad(img, (size, size), Image.Resampling.BICUBIC, color=(255, 255, 255))
    return ImageOps.fit(img, (size, size), Image.Resampling.BICUBIC)


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, subsampling=2, optimize=False, progressive=False)
    return buf.getvalue()


_N = 32
_DCT = np.cos(np.pi / _N * (np.arange(_N)[:, None]) * (np.arange(_N)[None, :] + 0.5))


def phash(img: Image.Image) -> int:
    """64-bit perceptual hash: DCT of a 32x32 gray thumbnail, 8x8 low frequencies vs their median."""
    small = img.resize((_N, _N), Image.Resampling.BILINEAR, reducing_gap=2.0)
    gray = np.asarray(small.convert("L"), np.float64)
    low = (_DCT @ gray @ _DCT.T)[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def masked_below(image: Image.Image, y: int, fill: tuple[int, int, int] = (128, 128, 128)) -> Image.Image:
    """A copy with every pixel row from y down painted gray: the bands not drawn yet, as TwiG
    shows the partial image."""
    out = image.convert("RGB").copy()
    if y < out.height:
        out.paste(fill, (0, y, out.width, out.height))
    return out
