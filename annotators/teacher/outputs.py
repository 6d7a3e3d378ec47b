"""What each teacher role must answer, as pydantic models built on `schemas/`, and the strict
JSON Schema (`response_format: json_schema`, `strict: true`) derived from each of them."""

from __future__ import annotations

import copy
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from schemas.twig_v1 import Criteria, Score

Text = Annotated[str, Field(min_length=1)]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaptionOut(_Out):
    """Image-first: a text-to-image prompt for the whole image."""

    prompt: Text = Field(description="One sentence a text-to-image model could draw this image from.")


class GuideOut(_Out):
    guide: Text = Field(description="What is newly visible in this band, in one or two sentences.")


class ReflectOut(_Out):
    criteria: Criteria
    score: Score = Field(description="Overall 0-100 score of the band.")
    critique: str = Field(description="What is wrong in the band; empty when nothing is.")
    revised_guide: Text = Field(description="The band's guide rewritten to fix what is wrong.")


class JudgeOut(_Out):
    score: Score = Field(description="0-100: how faithfully the image shows the prompt.")
    reason: str


@cache
def bands_model(k: int) -> type[_Out]:
    """Prompt-first: K band captions, top to bottom."""
    return create_model(
        f"Bands{k}", __base__=_Out,
        captions=(Annotated[list[Text], Field(min_length=k, max_length=k)],
                  Field(description=f"Exactly {k} captions, one per horizontal band, top to bottom.")),
    )


@cache
def _strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema in the form strict structured output accepts: references inlined,
    every object closed (`additionalProperties: false`) with all its properties required, and no
    titles or defaults."""
    raw = model.model_json_schema()
    defs = raw.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return walk({**target, **extra})
        out = {k: walk(v) for k, v in node.items() if k not in ("title", "default")}
        if out.get("type") == "object":
            out["additionalProperties"] = False
            out["required"] = list(out.get("properties", {}))
        return out

    return walk(raw)


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    return copy.deepcopy(_strict_schema(model))
