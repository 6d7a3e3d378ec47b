"""The dataset card a build writes: Hub YAML that huggingface_hub and datasets accept and that makes
`load_dataset(<folder>)` give what it declares; figures and example trajectories that are there,
decode, are listed in the manifest (so they are uploaded), and are the same bytes on a rebuild."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pipeline.config import load_config
from pipeline.driver import build
from schemas import load_record
from sharding.reader import iter_samples

SETS = ["source.count=48", "shard.max_records=16", "run.progress=false", "source.defect_rate=0.5"]

# the Hub's allowed values for the fields the card sets (huggingface.co/docs/hub/datasets-cards)
HUB_SIZE_CATEGORIES = {"n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M",
                       "100M<n<1B", "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("card") / "ds"
    build(load_config(None, [*SETS, f"run.out={out}"]))
    return out


def test_card_yaml_is_valid_hub_metadata(built):
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(built / "README.md")
    data = card.data.to_dict()
    manifest = json.loads((built / "manifest.json").read_text())
    assert data["license"] == "cc-by-4.0"
    assert set(data["task_categories"]) == {"text-to-image", "image-to-text"}
    assert data["size_categories"] == ["n<1K"] and set(data["size_categories"]) <= HUB_SIZE_CATEGORIES
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    assert configs["default"]["data_files"] == [
        {"split": "train", "path": "shards/train-*.tar"}, {"split": "val", "path": "shards/val-*.tar"}]
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    features = infos["default"].features
    assert set(features) == {"__key__", "__url__", "jpg", "json"}
    assert manifest["counts"]["written"] == 48 - manifest["counts"]["rejected"]


def test_load_dataset_on_the_folder_gives_what_the_card_declares(built):
    import datasets
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard

    declared = DatasetInfosDict.from_dataset_card_data(DatasetCard.load(built / "README.md").data)
    ds = datasets.load_dataset(str(built))
    manifest = json.loads((built / "manifest.json").read_text())
    for split in ("train", "val"):
        assert ds[split].num_rows == manifest["splits"][split]["records"]
        assert ds[split].features == declared["default"].features
    first = next(iter_samples(built / manifest["splits"]["train"]["shards"][0]))
    row = ds["train"][0]
    assert row["__key__"] == first["__key__"]
    assert load_record(json.dumps(row["json"])) == load_record(first["json"])


def test_figures_and_examples_are_in_the_card_and_the_manifest(built):
    text = (built / "README.md").read_text()
    manifest = json.loads((built / "manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    linked = re.findall(r"!\[[^\]]*\]\((card/[^)]+\.png)\)", text)
    assert {"card/scores.png", "card/lengths.png"} <= set(linked)
    assert sum(p.startswith("card/example-") for p in linked) == 3
    for rel in linked:
        assert rel in listed
        im = Image.open(io.BytesIO((built / rel).read_bytes()))
        im.load()
        assert im.width >= 600
    assert "## Example trajectories" in text and "| band | token rows | guide |" in text
    # the first example is one whose reflection sent a band back for redrawing
    assert "(redraw)" in text.split("## Example trajectories")[1].split("**", 3)[2]
    assert "prompt `scene-v1`" in text and "run on the `local` engine" in text
    for reason in json.loads((built / "stats.json").read_text())["rejected"]["by_reason"]:
        assert reason in text


def test_a_rebuild_writes_the_same_card_and_figures(built, tmp_path):
    again = tmp_path / "ds"
    build(load_config(None, [*SETS, f"run.out={again}"]))
    for rel in ["README.md", *(f["path"] for f in json.loads((built / "manifest.json").read_text())["files"])]:
        assert (again / rel).read_bytes() == (built / rel).read_bytes(), rel


def test_figures_can_be_turned_off_and_stale_ones_are_removed(built, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(built, copy)
    (copy / "manifest.json").unlink()  # force a finalize over the same units
    build(load_config(None, [*SETS, f"run.out={copy}", "card.figures=false"]))
    assert not list((copy / "card").glob("*.png"))
    assert "card/" not in (copy / "README.md").read_text()
    assert not [f for f in json.loads((copy / "manifest.json").read_text())["files"]
                if f["path"].startswith("card/")]
