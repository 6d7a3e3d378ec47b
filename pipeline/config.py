"""The pipeline config: one YAML or TOML file plus `--set a.b=value` overrides, validated up front.

`dataset_section()` is what determines the output bytes (echoed into the manifest and digested);
the `run` section (output folder, engine, workers) only says where and how to run it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from annotators.teacher.settings import Endpoint, TeacherConfig

# Every stage name, for `--until`; each recipe runs a subsequence of them in its own order.
STAGES = ("prepare", "caption", "segment", "guide", "draw", "reflect", "judge", "filter")
RECIPES = {
    # synthetic scenes annotated from their scene graphs, or real images annotated by a teacher
    "image-first": ("prepare", "caption", "segment", "guide", "reflect", "judge", "filter"),
    # TwiG-50K's recipe: band captions from the prompt, an image drawn from them, then reflection
    "prompt-first": ("segment", "guide", "draw", "prepare", "reflect", "judge", "filter"),
}
DEFAULT_CATEGORIES = ["color", "shape", "texture", "spatial", "3d_spatial", "numeracy", "complex"]


class ConfigError(ValueError):
    """A config mistake, reported to the user without a stack trace."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SourceConfig(_Section):
    kind: Literal["synthetic", "folder", "webdataset", "prompts"] = "synthetic"
    count: int = Field(1500, ge=1, le=10_000_000, description="synthetic: how many scenes to draw")
    defect_rate: float = Field(0.25, ge=0.0, le=1.0, description="synthetic: share with one defect")
    categories: list[str] = Field(default_factory=lambda: list(DEFAULT_CATEGORIES))
    path: str | None = Field(None, description="folder: the image folder (searched recursively)")
    urls: list[str] = Field(default_factory=list, description="webdataset: tar paths or fsspec URLs")
    prompts: list[str] = Field(
        default_factory=list, description="prompts: text files or glob patterns, one prompt per "
        "line; the category is the file name without a _train/_val suffix")
    license: str | None = None


class ImageConfig(_Section):
    size: int = Field(384, ge=16)
    grid: int = Field(24, ge=1, description="token rows and columns of the image tokenizer")
    quality: int = Field(90, ge=1, le=100)
    resize: Literal["center_crop", "pad"] = "center_crop"
    min_side: int = Field(64, ge=1)
    max_aspect: float = Field(4.0, ge=1.0)
    max_pixels: int = Field(64_000_000, ge=1)
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1)

    @model_validator(mode="after")
    def _grid_divides(self) -> ImageConfig:
        if self.size % self.grid:
            raise ValueError(f"image.size {self.size} must be a multiple of image.grid {self.grid}")
        return self


class SegmentConfig(_Section):
    bands: int = Field(3, ge=1)
    mode: Literal["uniform", "adaptive"] = "uniform"
    max_shift_rows: int = Field(2, ge=0)
    min_rows: int = Field(2, ge=1)


class AnnotateConfig(_Section):
    """Who writes each annotation: `scene` (the synthetic scene graph), `sidecar` (text files next
    to the images), `teacher` (an MLLM), or `auto` (scene for synthetic inputs, else teacher)."""

    caption: Literal["auto", "scene", "sidecar", "teacher"] = "auto"
    guide: Literal["auto", "scene", "teacher"] = "auto"
    reflect: Literal["auto", "scene", "teacher"] = "auto"
    judge: Literal["none", "teacher"] = "none"
    theta: int = Field(90, ge=0, le=100, description="a band scoring <= theta is regenerated")


class FilterConfig(_Section):
    min_guide_chars: int = Field(8, ge=0)
    max_guide_chars: int = Field(600, ge=1)
    max_prompt_chars: int = Field(500, ge=1)
    score_range: tuple[int, int] = (0, 100)
    dedup_prompts: bool = True
    near_dup_hamming: int | None = Field(2, ge=0, le=7)
    min_judge_score: int = Field(0, ge=0, le=100, description="with annotate.judge=teacher")


class ShardConfig(_Section):
    max_records: int = Field(100, ge=1)
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024)


class CardConfig(_Section):
    license: str = "cc-by-4.0"
    pretty_name: str = "TwiG synthetic compositional scenes"
    figures: bool = Field(True, description="draw score/length plots and example trajectories "
                          "into card/*.png for the card")
    examples: int = Field(3, ge=0, le=12, description="example trajectories shown in the card")


class RayConfig(_Section):
    """`run.engine=ray`: Ray tasks, one per work unit, results committed by the driver."""

    address: str | None = Field(
        None, description="a cluster (e.g. 'auto', '10.0.0.1:6379', 'ray://host:10001'); unset: "
        "a running cluster from RAY_ADDRESS, else a local instance on this machine")
    num_cpus: float | None = Field(None, gt=0, description="CPUs per unit task (default: from the "
                                   "stages' declared resources: 1, or 0.25 for teacher-bound runs)")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per unit task (default: the stages')")
    resources: dict[str, float] = Field(default_factory=dict, description="custom resources per task")
    max_concurrency: int | None = Field(None, ge=1, description="at most this many units in flight "
                                        "(default: what the cluster's CPUs allow)")
    max_retries: int = Field(3, ge=0, description="re-runs of a unit whose worker or node died")


class BeamConfig(_Section):
    """`run.engine=beam`: a Beam pipeline over the work units."""

    runner: str = Field("direct", description="'direct' runs Beam's FnApiRunner here, with no "
                        "download; else any runner name (DataflowRunner, FlinkRunner, SparkRunner, "
                        "PortableRunner) with its options below")
    running_mode: Literal["multi_processing", "multi_threading", "in_memory"] = "multi_processing"
    options: dict[str, Any] = Field(default_factory=dict, description="pipeline options passed "
                                    "through, e.g. {project: p, region: r, temp_location: gs://b/t}")
    staging: str | None = Field(None, description="where workers leave computed units for the "
                                "driver to commit (any Beam filesystem; default: temp_location/"
                                "twig-staging, else <out>/.staging)")


class RunConfig(_Section):
    out: str = "data/twig-synthetic"
    engine: Literal["local", "beam", "ray"] = "local"
    workers: int | None = Field(None, ge=1)
    progress: bool = True
    cache: str | None = Field(None, description="teacher response cache (default: <out>/cache/teacher)")
    unit_timeout_s: float | None = Field(
        3600.0, gt=0, description="a work unit still running after this many seconds stops the "
        "run with the stage it is stuck in (finished units are kept); null: no limit")
    ray: RayConfig = Field(default_factory=RayConfig)
    beam: BeamConfig = Field(default_factory=BeamConfig)


class PipelineConfig(_Section):
    version: Literal[1] = 1
    seed: int = 0
    limit: int | None = Field(None, ge=1)
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    until: Literal["prepare", "caption", "segment", "guide", "draw", "reflect", "judge", "filter"] = "filter"
    source: SourceConfig = Field(default_factory=SourceConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    shard: ShardConfig = Field(default_factory=ShardConfig)
    card: CardConfig = Field(default_factory=CardConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    endpoints: dict[str, Endpoint] = Field(
        default_factory=lambda: {"default": Endpoint()},
        description="where the teacher roles send requests (not part of the dataset digest)")
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        src = self.source
        if self.segment.bands > self.image.grid:
            raise ValueError(f"segment.bands {self.segment.bands} > image.grid {self.image.grid} rows")
        unknown = set(src.categories) - set(DEFAULT_CATEGORIES)
        if src.kind == "synthetic" and unknown:
            raise ValueError(f"source.categories: unknown {sorted(unknown)}; known {DEFAULT_CATEGORIES}")
        lo, hi = self.filter.score_range
        if not 0 <= lo <= hi <= 100:
            raise ValueError(f"filter.score_range {lo, hi} must satisfy 0 <= lo <= hi <= 100")
        recipe = self.recipe()
        if self.until not in self.stages_all():
            raise ValueError(f"until={self.until!r} is not a stage of the {recipe} recipe "
                             f"({', '.join(self.stages_all())})")
        a = self.annotate_modes()
        if src.kind != "synthetic" and "scene" in a.values():
            role = next(r for r, m in a.items() if m == "scene")
            raise ValueError(f"annotate.{role}=scene needs the synthetic source (it reads the scene "
                             f"graph); {src.kind} inputs need annotate.{role}=teacher or sidecar")
        if a["caption"] == "sidecar" and src.kind not in ("folder", "webdataset"):
            raise ValueError("annotate.caption=sidecar needs source.kind folder or webdataset")
        if src.kind == "folder" and not src.path:
            raise ValueError("source.path is required for source.kind=folder")
        if src.kind == "webdataset" and not src.urls:
            raise ValueError("source.urls is required for source.kind=webdataset")
        if src.kind == "prompts":
            if not src.prompts:
                raise ValueError("source.prompts is required for source.kind=prompts")
            if self.segment.mode != "uniform":
                raise ValueError("the prompt-first recipe fixes the bands before the image is drawn: "
                                 "segment.mode must be uniform")
            if self.until in ("segment", "guide", "draw"):
                raise ValueError(f"until={self.until!r}: a prompt-first record has no image before "
                                 "prepare (after draw); stop at prepare or a later stage")
        for role in self.teacher_roles():
            name = self.teacher.endpoint_of(role)
            if name not in self.endpoints:
                raise ValueError(f"teacher.{role}.endpoint {name!r} is not in endpoints "
                                 f"({', '.join(self.endpoints) or 'none'})")
            if role != "image" and not (getattr(self.teacher, role).model or self.teacher.model):
                raise ValueError(f"teacher.{role} needs a model: set teacher.model (MODEL=... with "
                                 f"make) or teacher.{role}.model")
        return self

    def recipe(self) -> str:
        return "prompt-first" if self.source.kind == "prompts" else "image-first"

    def stages_all(self) -> tuple[str, ...]:
        """This recipe's stages in order (judge only when a judge is configured)."""
        return tuple(s for s in RECIPES[self.recipe()] if s != "judge" or self.annotate.judge != "none")

    def stages(self) -> tuple[str, ...]:
        """The stages this run executes: the recipe's, up to `until`."""
        names = self.stages_all()
        return names[: names.index(self.until) + 1]

    def annotate_modes(self) -> dict[str, str]:
        """caption/guide/reflect modes with `auto` resolved."""
        synthetic = self.source.kind == "synthetic"
        out = {}
        for role in ("caption", "guide", "reflect"):
            mode = getattr(self.annotate, role)
            out[role] = ("scene" if synthetic else "teacher") if mode == "auto" else mode
        if self.source.kind == "prompts":
            out["caption"] = "prompt"
        return out

    def teacher_roles(self) -> list[str]:
        """The teacher roles this run calls (none for an offline run)."""
        modes, stages = self.annotate_modes(), self.stages()
        roles = [r for r in ("caption", "guide", "reflect") if r in stages and modes[r] == "teacher"]
        if "draw" in stages:
            roles.append("image")
        if "judge" in stages and self.annotate.judge == "teacher":
            roles.append("judge")
        return roles

    def dataset_section(self) -> dict[str, Any]:
        """The part of the config that determines the output (no paths, engine or workers)."""
        return self.model_dump(mode="json", exclude={"run", "endpoints"})

    def digest(self) -> str:
        blob = json.dumps(self.dataset_section(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def workers(self) -> int:
        """run.workers, else one per core; a teacher-bound run uses at least 4, since its client
        is CPU-bound per process while it waits on the network."""
        if self.run.workers:
            return self.run.workers
        cores = max(1, len(os.sched_getaffinity(0)))
        return max(4, cores) if self.teacher_roles() else cores


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except yaml.YAMLError as e:  # one line: where, and what the parser expected
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{path}: not valid YAML{where}: {what}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _apply_override(data: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    dotted, raw = assignment.split("=", 1)
    keys = [k for k in dotted.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"--set has an empty key: {assignment!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {k} is not a section")
    node[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                **fields: Any) -> PipelineConfig:
    """Read, override and validate a config; every mistake becomes one clear ConfigError."""
    data = _read_file(Path(path)) if path else {}
    for assignment in overrides or []:
        _apply_override(data, assignment)
    for dotted, value in fields.items():
        if value is not None:
            _apply_override(data, f"{dotted.replace('__', '.')}={json.dumps(value)}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "config"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"  {loc}: {msg}")
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid config{where}:\n" + "\n".join(lines)) from None
