"""Images to VQ token ids with the model's own VQ encoder, cached as `<key>.tokens.npy`.

The pixels a model's VQ encoder reads are `grid * 2**(levels-1)` on a side (Janus-Pro: 24 x 16 =
384), scaled to [-1, 1]. Token files live under `<cache>/<fingerprint>/`, where the fingerprint is a
hash of the codebook and the pixel size, so two models with different codebooks never share a file.
Images are encoded one at a time: a batched convolution rounds differently from a single one, and a
cached token must not depend on which batch it happened to be encoded in.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainer.data import Example

log = logging.getLogger("twig")


class ImageTokenizer:
    """Encodes training images for one model; reads and writes the token cache when given one."""

    def __init__(self, model, cache_dir: str | Path | None = None):
        self.vq = model.model.vqmodel
        cfg = model.config.vq_config
        self.side = int(round(model.config.vision_config.num_image_tokens ** 0.5))
        self.pixels = self.side * 2 ** (len(cfg.channel_multiplier) - 1)
        self.fingerprint = self._fingerprint()
        self.cache = Path(cache_dir) / self.fingerprint if cache_dir is not None else None
        self.hits = self.encoded = 0

    def _fingerprint(self) -> str:
        weight = self.vq.quantize.embedding.weight.detach().float().cpu().numpy()
        h = hashlib.sha256(np.ascontiguousarray(weight).tobytes())
        h.update(f"{self.pixels}".encode())
        return h.hexdigest()[:16]

    def pixel_values(self, image: Image.Image) -> torch.Tensor:
        """(1, 3, P, P) in [-1, 1], resized with bicubic filtering."""
        img = image.convert("RGB")
        if img.size != (self.pixels, self.pixels):
            img = img.resize((self.pixels, self.pixels), Image.Resampling.BICUBIC)
        arr = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)
        return (arr / 127.5 - 1.0)[None]

    @torch.no_grad()
    def encode_image(self, image: Image.Image) -> np.ndarray:
        param = next(self.vq.parameters())
        px = self.pixel_values(image).to(param.device, param.dtype)
        return self.vq.encode(px).image_tokens.reshape(-1).to(torch.int32).cpu().numpy()

    def tokens(self, example: Example) -> np.ndarray:
        """The example's image tokens (side*side int32), from the cache when there."""
        path = self.cache / f"{example.key}.tokens.npy" if self.cache is not None else None
        if path is not None and path.is_file():
            try:
                cached = np.load(path)
                if cached.shape == (self.side * self.side,):
                    self.hits += 1
                    return cached
            except (ValueError, OSError) as e:
                log.warning("token cache %s is unreadable (%s); encoding again", path, e)
        tokens = self.encode_image(example.image())
        self.encoded += 1
        if path is not None:
            _save_atomic(path, tokens)
        return tokens

    def tokens_all(self, examples: list[Example], progress: Callable[[int], None] | None = None
                   ) -> dict[str, np.ndarray]:
        out = {}
        for e in examples:
            out[e.key] = self.tokens(e)
            if progress is not None:
                progress(1)
        return out


def _save_atomic(path: Path, tokens: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, tokens)
    os.replace(tmp, path)
