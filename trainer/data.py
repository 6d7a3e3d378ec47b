"""Read the pipeline's trajectories back for training: a dataset folder or a Hub dataset.

A folder written by `make dataset` (it holds `manifest.json`) is read straight from its shards. Any
other name goes through `datasets.load_dataset`, which reads the dataset card's YAML: a Hub repo id
(`org/twig-data`) or a folder without a manifest. Either way each trajectory comes back as its
validated `twig/v1` record and its image's encoded bytes, in a stable order (by key).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from schemas import SchemaError, TwigRecord, load_record
from sharding.reader import iter_samples

log = logging.getLogger("twig")

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


class DataError(ValueError):
    """The training data cannot be read; the message names the source and what is wrong."""


@dataclass
class Example:
    """One trajectory: its record and its image (encoded bytes; decoded on demand)."""

    record: TwigRecord
    image_bytes: bytes

    @property
    def key(self) -> str:
        return self.record.key

    def image(self) -> Image.Image:
        with Image.open(io.BytesIO(self.image_bytes)) as im:
            return im.convert("RGB")


def load_examples(source: str | Path, split: str = "train", limit: int | None = None) -> list[Example]:
    """The trajectories of one split, sorted by key; `limit` keeps the first n of that order."""
    if split not in ("train", "val"):
        raise DataError(f"unknown split {split!r}; twig/v1 datasets have 'train' and 'val'")
    path = Path(source)
    if (path / "manifest.json").is_file():
        examples = _from_folder(path, split)
    elif path.exists() and not path.is_dir():
        raise DataError(f"{source} is a file; give a dataset folder (with manifest.json) or a Hub id")
    else:
        examples = _from_datasets(str(source), split)
    examples.sort(key=lambda e: e.key)
    return examples[:limit] if limit is not None else examples


def _from_folder(path: Path, split: str) -> list[Example]:
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"{path}/manifest.json is not valid JSON ({e})") from None
    shards = [path / s["path"] for s in manifest.get("shards", []) if s.get("split") == split]
    if not shards:
        shards = sorted((path / "shards").glob(f"{split}-*.tar"))
    missing = [str(s) for s in shards if not s.is_file()]
    if missing:
        raise DataError(f"{path}: the manifest lists shards that are missing: {', '.join(missing[:3])}")
    out: list[Example] = []
    for shard in shards:
        for sample in iter_samples(shard, ("json", *IMAGE_EXTS)):
            out.append(_example(sample, f"{shard.name}:{sample['__key__']}"))
    return out


def _example(sample: dict, where: str) -> Example:
    if "json" not in sample:
        raise DataError(f"{where}: no .json member (run `twig validate` on the dataset)")
    image = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
    if image is None:
        raise DataError(f"{where}: no image member ({'/'.join(IMAGE_EXTS)})")
    try:
        record = load_record(sample["json"])
    except SchemaError as e:
        raise DataError(f"{where}: {e}") from None
    return Example(record, image)


def _from_datasets(name: str, split: str) -> list[Example]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except ValueError as e:
        if "split" in str(e).lower():
            raise DataError(f"{name} has no {split!r} split ({e})") from None
        raise DataError(f"cannot load dataset {name!r}: {e}") from None
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as e:
        raise DataError(f"no dataset {name!r}: not a dataset folder (no manifest.json) and not a "
                        f"dataset the Hub or `datasets` can find ({e})") from None
    for column in ("json", "jpg"):
        if column not in ds.column_names:
            raise DataError(f"{name} is not a twig/v1 dataset: no {column!r} column "
                            f"(columns: {', '.join(ds.column_names)})")
    out = []
    for row in ds:
        buf = io.BytesIO()
        row["jpg"].convert("RGB").save(buf, format="PNG")   # lossless: the JPEG is already decoded
        out.append(_example({"__key__": row.get("__key__"), "json": _drop_nulls(row["json"]),
                             "jpg": buf.getvalue()}, f"{name}:{row.get('__key__')}"))
    return out


def _drop_nulls(value):
    """Arrow fills every absent optional field with null; drop them (at any depth) so the record
    validates as the JSON it was written from."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value

