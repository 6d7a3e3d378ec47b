"""The record contract: one definition, three derived forms, clear refusals."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from schemas import (
    SchemaError,
    TwigRecord,
    arrow_schema,
    dump_record,
    json_schema,
    load_record,
    region_problems,
)
from tests.conftest import REPO


def record(**over) -> dict:
    base = {
        "schema": "twig/v1", "key": "k-1", "prompt": "a red circle", "category": "color",
        "split": "train", "source": {"kind": "synthetic", "uri": "synthetic://0/1"},
        "image": {"width": 384, "height": 384, "sha256": "0" * 64, "grid": [24, 24]},
        "regions": [
            {"index": i, "rows": [8 * i, 8 * i + 8], "box": [0, 128 * i, 384, 128 * i + 128],
             "guide": f"guide {i}",
             "reflection": {"score": 95, "criteria": dict.fromkeys(
                 ["color_accuracy", "object_completeness", "detail_richness",
                  "spatial_relationships", "visual_coherence"], 95),
                 "critique": "fine", "revised_guide": f"guide {i}", "accepted": True}}
            for i in range(3)],
    }
    base.update(over)
    return base


def test_written_json_schema_is_the_derived_one():
    on_disk = json.loads((REPO / "schemas" / "twig_v1.schema.json").read_text())
    assert on_disk == json.loads(json.dumps(json_schema())), "run `make schema` after changing the record"


def test_json_schema_validates_what_the_model_accepts_and_rejects():
    import jsonschema

    jsonschema.validate(record(), json_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(record(split="test"), json_schema())


def test_unknown_schema_version_is_refused_clearly():
    with pytest.raises(SchemaError, match="unsupported schema version 'twig/v2'"):
        load_record(record(schema="twig/v2"))


def test_bad_fields_name_their_location():
    bad = record()
    bad["regions"][1]["reflection"]["score"] = 140
    with pytest.raises(SchemaError, match=r"regions\.1\.reflection\.score"):
        load_record(bad)
    with pytest.raises(SchemaError, match="not valid JSON"):
        load_record(b"{nope")


def test_arrow_schema_round_trips_records():
    rec = load_record(record())
    table = pa.Table.from_pylist([json.loads(dump_record(rec))], schema=arrow_schema())
    assert table.num_rows == 1
    assert table.schema.field("regions").type.value_type.field("reflection").type.field("score").type == pa.int64()
    assert load_record(table.to_pylist()[0]) == rec


def test_dump_is_deterministic_and_keeps_field_order():
    rec = load_record(record())
    assert dump_record(rec) == dump_record(TwigRecord.model_validate(json.loads(dump_record(rec))))
    assert list(json.loads(dump_record(rec)))[:3] == ["schema", "key", "prompt"]


def test_region_problems_finds_gaps_and_missing_text():
    assert region_problems(load_record(record())) == []
    gap = record()
    gap["regions"][1]["rows"] = [9, 16]
    gap["regions"][1]["box"] = [0, 144, 384, 256]
    assert any("starts at row 9" in p for p in region_problems(load_record(gap)))
    empty = record()
    empty["regions"][2]["guide"] = ""
    assert region_problems(load_record(empty)) == ["region 2 has an empty guide"]
    assert region_problems(load_record(empty), complete=False) == []
