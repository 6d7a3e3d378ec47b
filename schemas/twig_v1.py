"""The `twig/v1` trajectory record, defined once.

The pydantic models below are the single definition. JSON Schema (`json_schema()`, also written to
`schemas/twig_v1.schema.json`), the pyarrow schema (`arrow_schema()`) and validation
(`load_record()`) are all derived from them, so the three can never disagree.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = "twig/v1"
CRITERIA = (
    "color_accuracy",
    "object_completeness",
    "detail_richness",
    "spatial_relationships",
    "visual_coherence",
)

Score = Annotated[int, Field(ge=0, le=100)]
NonNeg = Annotated[int, Field(ge=0)]


class SchemaError(ValueError):
    """A record does not follow the `twig/v1` contract; the message says where and why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Source(_Model):
    kind: str = Field(description="Source kind: synthetic, folder, webdataset or prompts.")
    uri: str = Field(description="Where the input came from (path, URL or synthetic://seed/index).")
    license: str | None = None


class ImageInfo(_Model):
    width: Annotated[int, Field(gt=0)]
    height: Annotated[int, Field(gt=0)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    grid: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=2, max_length=2)] = Field(
        description="Token grid [rows, cols] of the image tokenizer (24x24 for Janus-Pro at 384 px)."
    )


class Criteria(_Model):
    color_accuracy: Score
    object_completeness: Score
    detail_richness: Score
    spatial_relationships: Score
    visual_coherence: Score


class Reflection(_Model):
    score: Score
    criteria: Criteria
    critique: str
    revised_guide: str
    accepted: bool = Field(description="True when the band is kept as drawn (score above theta).")


class Region(_Model):
    index: NonNeg
    rows: Annotated[list[NonNeg], Field(min_length=2, max_length=2)] = Field(
        description="Half-open token-row range [r0, r1) of the band."
    )
    box: Annotated[list[NonNeg], Field(min_length=4, max_length=4)] = Field(
        description="Pixel box [x0, y0, x1, y1] of the band."
    )
    guide: str = Field(description="What is newly visible in this band (empty before the guide stage).")
    reflection: Reflection | None = None


class Usage(_Model):
    calls: NonNeg = 0
    prompt_tokens: NonNeg = 0
    completion_tokens: NonNeg = 0


class TeacherRole(_Model):
    backend: str
    model: str
    prompt_version: str
    usage: Usage = Field(default_factory=Usage)


class TeacherRoles(_Model):
    """Provenance of each annotation role; never holds secrets."""

    caption: TeacherRole | None = None
    guide: TeacherRole | None = None
    reflect: TeacherRole | None = None
    image: TeacherRole | None = None
    judge: TeacherRole | None = None


class FilterValues(_Model):
    """The measured values that the filter stage kept the record on."""

    prompt_chars: NonNeg | None = None
    min_guide_chars: NonNeg | None = None
    max_guide_chars: NonNeg | None = None
    min_score: Score | None = None
    judge_score: Score | None = Field(None, description="A teacher judge's 0-100 prompt fidelity.")
    phash: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")] | None = None


class SceneObject(_Model):
    id: NonNeg
    shape: str
    color: str
    texture: str
    box: Annotated[list[int], Field(min_length=4, max_length=4)]
    depth: NonNeg = Field(description="Drawing order: higher is nearer the viewer.")


class Relation(_Model):
    subject: NonNeg
    relation: str
    object: NonNeg


class Defect(_Model):
    kind: Literal["wrong_color", "missing_object", "extra_object", "wrong_position", "wrong_texture"]
    band: NonNeg | None = Field(None, description="First band that shows the defect (set by segment).")
    object: NonNeg
    expected: str
    actual: str


class Scene(_Model):
    """The exact scene graph of a synthetic render (what was asked, and the defect drawn, if any)."""

    background: str
    objects: list[SceneObject]
    relations: list[Relation]
    defect: Defect | None = None


class TwigRecord(_Model):
    schema_: Literal["twig/v1"] = Field(SCHEMA_VERSION, alias="schema")
    key: Annotated[str, Field(pattern=r"^[a-z0-9_-]+$", min_length=1, max_length=128)]
    prompt: str
    category: str | None = None
    split: Literal["train", "val"]
    source: Source
    image: ImageInfo
    regions: list[Region]
    teacher: TeacherRoles = Field(default_factory=TeacherRoles)
    filters: FilterValues = Field(default_factory=FilterValues)
    scene: Scene | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a `twig/v1` record."""
    schema = TwigRecord.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://twig-forge/schemas/twig_v1.schema.json"
    return schema


def load_record(data: dict[str, Any] | str | bytes) -> TwigRecord:
    """Parse and validate a record; unknown schema versions and bad fields raise SchemaError."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise SchemaError(f"record is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise SchemaError(f"record must be a JSON object, got {type(data).__name__}")
    version = data.get("schema")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"unsupported schema version {version!r}: this twig-forge reads {SCHEMA_VERSION!r} only"
        )
    try:
        record = TwigRecord.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise SchemaError(f"record {data.get('key', '?')!r} is invalid: {problems}") from None
    return record


def dump_record(record: TwigRecord) -> bytes:
    """Deterministic JSON bytes of a record (field order fixed, nulls kept, UTF-8)."""
    return json.dumps(
        record.model_dump(mode="json", by_alias=True),
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")


def region_problems(record: TwigRecord, *, complete: bool = True) -> list[str]:
    """Why the regions do not tile the token grid (empty list when they do).

    With complete=True every band must also carry a non-empty guide and a reflection.
    """
    problems: list[str] = []
    rows, cols = record.image.grid
    if not record.regions:
        return ["no regions"]
    expect = 0
    row_h = record.image.height / rows
    for i, region in enumerate(record.regions):
        r0, r1 = region.rows
        if region.index != i:
            problems.append(f"region {i} has index {region.index}")
        if r0 != expect:
            problems.append(f"region {i} starts at row {r0}, expected {expect}")
        if r1 <= r0:
            problems.append(f"region {i} is empty (rows {r0}..{r1})")
        expect = r1
        box = [0, round(r0 * row_h), record.image.width, round(r1 * row_h)]
        if region.box != box:
            problems.append(f"region {i} box {region.box} does not match rows ({box})")
        if complete:
            if not region.guide.strip():
                problems.append(f"region {i} has an empty guide")
            if region.reflection is None:
                problems.append(f"region {i} has no reflection")
    if expect != rows:
        problems.append(f"regions end at row {expect}, grid has {rows} rows")
    return problems


# ---------------------------------------------------------------- pyarrow schema, derived


def _arrow_type(annotation: Any) -> tuple[Any, bool]:
    """(arrow type, nullable) of a pydantic field annotation."""
    import pyarrow as pa  # imported here: workers that only validate records skip its start-up

    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _arrow_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"cannot map union {annotation} to arrow")
        inner, _ = _arrow_type(args[0])
        return inner, True
    if origin is Literal:
        return pa.string(), False
    if origin is list:
        inner, _ = _arrow_type(typing.get_args(annotation)[0])
        return pa.list_(inner), False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(_arrow_fields(annotation)), False
    mapping = {str: pa.string(), int: pa.int64(), bool: pa.bool_(), float: pa.float64()}
    if annotation in mapping:
        return mapping[annotation], False
    raise TypeError(f"cannot map {annotation!r} to arrow")


def _arrow_fields(model: type[BaseModel]) -> list:
    import pyarrow as pa

    fields = []
    for name, info in model.model_fields.items():
        typ, nullable = _arrow_type(info.annotation)
        fields.append(pa.field(info.alias or name, typ, nullable=nullable))
    return fields


def arrow_schema():
    """pyarrow schema of a `twig/v1` record, derived from the pydantic definition."""
    import pyarrow as pa

    return pa.schema(_arrow_fields(TwigRecord))


if __name__ == "__main__":  # python -m schemas.twig_v1 > schemas/twig_v1.schema.json
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
