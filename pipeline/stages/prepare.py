"""prepare: decode, orient, normalise the mode, resize to the training size, encode, hash."""

from __future__ import annotations

import hashlib

from PIL import Image

from pipeline.config import ImageConfig
from pipeline.imaging import encode_jpeg, fit, open_checked, phash
from pipeline.record import Reject, Sample
from pipeline.stage import Stage


class PrepareStage(Stage):
    name = "prepare"

    def __init__(self, cfg: ImageConfig) -> None:
        self.cfg = cfg

    def setup(self) -> None:
        # Pillow's own bomb guard follows our limit (it refuses past twice MAX_IMAGE_PIXELS at open;
        # open_checked refuses past max_pixels from the header, before decoding).
        Image.MAX_IMAGE_PIXELS = self.cfg.max_pixels

    def __call__(self, sample: Sample) -> Sample:
        c = self.cfg
        if sample.image is None:
            if sample.raw is None:
                raise Reject("no image data")
            sample.image = open_checked(sample.raw, max_pixels=c.max_pixels, min_side=c.min_side,
                                        max_aspect=c.max_aspect, target=c.size)
            sample.raw = None
        sample.image = fit(sample.image, c.size, c.resize)
        sample.jpeg = encode_jpeg(sample.image, c.quality)
        sample.sha256 = hashlib.sha256(sample.jpeg).hexdigest()
        sample.phash = phash(sample.image)
        sample.filters.phash = f"{sample.phash:016x}"
        return sample
