"""Typed settings of the teacher: endpoints (where and how fast to call) and roles (what to ask).

Endpoints hold only operational values (URL, limits, timeouts); the API key is read from the
environment variable an endpoint names, never from a config file. Roles hold what shapes the
output (model, generation parameters), so they belong to the dataset's config digest.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Endpoint(_Settings):
    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL, e.g. http://localhost:8000/v1; default: "
        "$OPENAI_BASE_URL, else api.openai.com")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key")
    concurrency: int = Field(64, ge=1, description="requests in flight at once (whole run)")
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    timeout_s: float = Field(120.0, gt=0, description="per request")
    max_retries: int = Field(4, ge=0, description="retries after the first attempt")
    unreachable_after: int = Field(
        10, ge=0, description="stop the run (finished work kept) when this many requests in a row "
        "gave up without any answer from the endpoint (connection refused/reset, timeouts); 0: never")
    backoff_base_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    structured_output: Literal["json_schema", "json_object", "text"] = "json_schema"
    fallback: Literal["json_object", "text", "none"] = Field(
        "json_object", description="used when the endpoint refuses json_schema (HTTP 400/422)")
    max_tokens_param: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL, e.g. http://localhost:8000/v1")
        return v

    @field_validator("api_key_env")
    @classmethod
    def _variable_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):  # the value itself is never echoed
            raise ValueError("must be the name of an environment variable (e.g. OPENAI_API_KEY) "
                             "that holds the key, never the key itself")
        return v


class ChatRole(_Settings):
    endpoint: str = "default"
    model: str | None = Field(None, description="default: teacher.model")
    temperature: float | None = Field(0.2, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int = Field(1024, ge=16)
    seed: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict, description="more request fields, sent as is")


class ImageRole(_Settings):
    endpoint: str = "default"
    model: str = "gpt-image-1"
    size: str = Field("1024x1024", pattern=r"^(auto|\d+x\d+)$")
    quality: str | None = None
    response_format: Literal["auto", "b64_json", "none"] = Field(
        "auto", description="auto: ask for b64_json, except from gpt-image models (they always "
        "answer base64 and take no response_format); none: never send the field")

    def response_format_field(self) -> str | None:
        if self.response_format == "auto":
            return None if self.model.startswith("gpt-image") else "b64_json"
        return None if self.response_format == "none" else self.response_format
    extra: dict[str, Any] = Field(default_factory=dict)


class Price(_Settings):
    input_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens")
    per_image: float = Field(0.0, ge=0, description="USD per generated image")


class TeacherConfig(_Settings):
    model: str | None = Field(None, description="chat model for every role that names none")
    caption: ChatRole = Field(default_factory=ChatRole)
    guide: ChatRole = Field(default_factory=ChatRole)
    reflect: ChatRole = Field(default_factory=ChatRole)
    judge: ChatRole = Field(default_factory=lambda: ChatRole(temperature=0.0, max_tokens=256))
    image: ImageRole = Field(default_factory=ImageRole)
    image_max_side: int = Field(768, ge=64, description="images are sent resized to this side")
    image_detail: Literal["auto", "low", "high"] | None = None
    prices: dict[str, Price] = Field(default_factory=dict, description="by model name")

    def chat_model(self, role: str) -> str:
        r: ChatRole = getattr(self, role)
        model = r.model or self.model
        if not model:
            raise ValueError(f"teacher.{role}.model is not set (set teacher.model or MODEL=...)")
        return model

    def endpoint_of(self, role: str) -> str:
        """The endpoint name a role (caption, guide, reflect, judge or image) sends to."""
        return getattr(self, role).endpoint

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, images: int = 0) -> float:
        p = self.prices.get(model)
        if p is None:
            return 0.0
        return (prompt_tokens * p.input_per_mtok + completion_tokens * p.output_per_mtok) / 1e6 \
            + images * p.per_image
