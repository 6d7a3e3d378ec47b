"""The dataset card (`README.md`): Hub YAML whose `configs` make `load_dataset(dir)` work, and a
readable account of what the dataset holds and how it was built."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from schemas import TwigRecord
from sharding import plots


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def card_features() -> list[dict]:
    """`dataset_info.features` for the card, derived from the twig/v1 arrow schema, so that
    `load_dataset` reads every record with the declared types instead of guessing from 5 samples."""
    import datasets
    import pyarrow as pa

    from schemas import arrow_schema

    record = pa.struct(list(arrow_schema()))
    features = datasets.Features({
        "__key__": datasets.Value("string"),
        "__url__": datasets.Value("string"),
        "jpg": datasets.Image(),
        "json": datasets.Features.from_arrow_schema(pa.schema([pa.field("json", record)]))["json"],
    })
    return features._to_yaml_list()


def card_yaml(manifest: dict, license_: str, pretty_name: str) -> dict:
    data_files = [{"split": split, "path": f"shards/{split}-*.tar"}
                  for split in ("train", "val") if manifest["splits"][split]["shards"]]
    return {
        "license": license_,
        "pretty_name": pretty_name,
        "task_categories": ["text-to-image", "image-to-text"],
        "language": ["en"],
        "tags": ["twig", "thinking-while-generating", "interleaved-reasoning", "webdataset"],
        "size_categories": [size_category(manifest["counts"]["written"])],
        "configs": [{"config_name": "default", "data_files": data_files}],
        "dataset_info": {"features": card_features()},
    }


def _table(rows: list[tuple], header: tuple) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class CardAssets:
    """The card's figures (`card/*.png`, path -> PNG bytes) and the example trajectories shown."""

    files: dict[str, bytes] = field(default_factory=dict)
    examples: list[tuple[TwigRecord, str]] = field(default_factory=list)  # record, its figure


def card_assets(records: list[TwigRecord], images: dict[str, bytes], theta: float,
                examples: int) -> CardAssets:
    """Draw the card's figures. `images` maps record keys to JPEG bytes for the examples chosen by
    `plots.pick_examples(records, examples)`."""
    out = CardAssets()
    for name, png in (("card/scores.png", plots.score_plot(records, theta)),
                      ("card/lengths.png", plots.length_plot(records))):
        if png is not None:
            out.files[name] = png
    for i, rec in enumerate(plots.pick_examples(records, examples), 1):
        path = f"card/example-{i}.png"
        out.files[path] = plots.example_plot(rec, images[rec.key])
        out.examples.append((rec, path))
    return out


def _example_section(examples: list[tuple[TwigRecord, str]]) -> list[str]:
    parts = ["## Example trajectories\n",
             "Each image shows the bands the model draws one after another (numbered boxes); the "
             "text is what it writes between them.\n"]
    for rec, path in examples:
        rows = []
        for reg in rec.regions:
            ref = reg.reflection
            rows.append((reg.index + 1, f"{reg.rows[0]}-{reg.rows[1]}", _cell(reg.guide),
                         f"{ref.score} ({'kept' if ref.accepted else 'redraw'})" if ref else "",
                         _cell(ref.critique) if ref else "", _cell(ref.revised_guide) if ref else ""))
        parts += [f"**{_cell(rec.prompt or rec.key)}** ({rec.category or 'no category'}, `{rec.key}`)\n",
                  f"![{rec.key}]({path})\n",
                  _table(rows, ("band", "token rows", "guide", "score", "critique",
                                "revised guide")) + "\n"]
    return parts


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def render_card(manifest: dict, stats: dict, license_: str, pretty_name: str, *,
                engine: str | None = None, assets: CardAssets | None = None) -> str:
    assets = assets or CardAssets()
    meta = yaml.safe_dump(card_yaml(manifest, license_, pretty_name), sort_keys=False)
    cfg = manifest["config"]
    counts = manifest["counts"]
    tasks = stats["tasks"]
    k = cfg["segment"]["bands"]
    task_rows = [(f"{fam}_{i}", tasks.get(f"{fam}_{i}", 0)) for fam in ("think", "reflect", "generate")
                 for i in range(1, k + 1)]
    reason_rows = sorted(stats["rejected"]["by_reason"].items(), key=lambda kv: (-kv[1], kv[0]))
    bands = stats["bands"]
    teacher = [f"{role}: `{info.get('backend')}` / `{info.get('model')}`, prompt "
               f"`{info.get('prompt_version')}`"
               for role, info in sorted(manifest.get("teacher", {}).items())]
    parts = [
        f"---\n{meta}---\n",
        f"# {pretty_name}\n",
        "Training data for **Thinking-while-Generating** (TwiG, arXiv 2511.16671): an autoregressive "
        f"image model draws a {cfg['image']['grid']}x{cfg['image']['grid']} token grid in {k} bands "
        "of token rows, writes a short *guide* before each band and a *reflection* (a 0-100 score on "
        "five criteria, a critique and a revised guide) after it. Each record is one trajectory; it "
        "expands into think/reflect/generate task instances for supervised fine-tuning.\n",
        "## Contents\n",
        _table([("train", manifest["splits"]["train"]["records"], len(manifest["splits"]["train"]["shards"])),
                ("val", manifest["splits"]["val"]["records"], len(manifest["splits"]["val"]["shards"]))],
               ("split", "trajectories", "shards")) + "\n",
        f"Images are {cfg['image']['size']}x{cfg['image']['size']} JPEG (quality {cfg['image']['quality']}). "
        f"Schema `{manifest['schema']}`; shards are WebDataset tars holding `<key>.jpg` and `<key>.json`.\n",
        "### Task instances\n",
        _table(task_rows + [("total", tasks.get("total", 0))], ("task", "instances")) + "\n",
        "A band whose reflection rejects it is a reflection example but not a generation target, so "
        "generate counts can be lower than think counts.\n",
        "### Bands and reflections\n",
        f"- bands reflected: {bands['reflected']}; flagged for regeneration (score <= theta="
        f"{cfg['annotate']['theta']}): {bands['flagged']}\n"
        f"- mean score: {bands['mean_score']}; mean guide length: {bands['mean_guide_chars']} characters\n",
    ]
    figures = [(p, alt) for p, alt in (("card/scores.png", "band and criterion scores"),
                                       ("card/lengths.png", "guide and prompt lengths"))
               if p in assets.files]
    parts += [f"![{alt}]({p})\n" for p, alt in figures]
    if stats.get("categories"):
        parts += ["### Categories\n",
                  _table(sorted(stats["categories"].items()), ("category", "trajectories")) + "\n"]
    parts += _example_section(assets.examples) if assets.examples else []
    parts += [
        "## How it was built\n",
        f"- source: `{cfg['source']['kind']}`"
        + (f" ({cfg['source']['count']} scenes, seed {cfg['seed']}, defect rate {cfg['source']['defect_rate']})"
           if cfg["source"]["kind"] == "synthetic" else "")
        + (" (prompt-first: a teacher wrote the band captions, an image model drew the image from "
           "them, the teacher reflected on each band)" if cfg["source"]["kind"] == "prompts" else "")
        + "\n"
        f"- stages: {' -> '.join(manifest['stages'])} -> shard"
        + (f", run on the `{engine}` engine (every engine writes byte-identical shards)" if engine else "")
        + "\n"
        f"- segmentation: {cfg['segment']['mode']}, {k} bands\n"
        "- annotators (backend / model, prompt template version; each record's `teacher` field "
        "holds the same per record):" + ("".join(f"\n  - {t}" for t in teacher) if teacher else " none")
        + "\n"
        f"- filters: guide length {cfg['filter']['min_guide_chars']}..{cfg['filter']['max_guide_chars']} "
        f"chars, prompt <= {cfg['filter']['max_prompt_chars']} chars, score range "
        f"{cfg['filter']['score_range']}, exact-duplicate prompts "
        f"{'dropped' if cfg['filter']['dedup_prompts'] else 'kept'}, near-duplicate images "
        + (f"(pHash Hamming <= {cfg['filter']['near_dup_hamming']}) dropped"
           if cfg["filter"]["near_dup_hamming"] is not None else "kept") + "\n"
        f"- config digest: `{manifest['config_digest']}` (the full config is in `manifest.json`)\n",
        "### Funnel\n",
        _table([("read", counts["read"]), ("rejected", counts["rejected"]), ("written", counts["written"])],
               ("step", "records")) + "\n",
    ]
    if reason_rows:
        parts += ["Reject reasons (one line per input in `rejects/*.jsonl`):\n",
                  _table(reason_rows, ("stage: reason", "count")) + "\n"]
    t = stats["teacher"]
    if t["by_role"]:
        rows = [(key, u["calls"], u["prompt_tokens"], u["completion_tokens"], u["images"],
                 f"${u['cost_usd']:.4f}") for key, u in t["by_role"].items()]
        rows.append(("total", sum(u["calls"] for u in t["by_role"].values()),
                     sum(u["prompt_tokens"] for u in t["by_role"].values()),
                     sum(u["completion_tokens"] for u in t["by_role"].values()),
                     sum(u["images"] for u in t["by_role"].values()), f"${t['cost_usd']:.4f}"))
        parts += ["### Teacher cost\n",
                  "Responses used by this dataset (kept and rejected inputs), by role and model; cost "
                  "from the config's price table:\n",
                  _table(rows, ("role/model", "responses", "prompt tokens", "completion tokens",
                                "images", "cost")) + "\n"]
    parts += [
        "## Loading\n",
        "```python\nimport datasets\nds = datasets.load_dataset(\"<this folder or repo>\")\n"
        "rec = ds[\"train\"][0][\"json\"]  # the twig/v1 record; ds['train'][0]['jpg'] is the image\n\n"
        "import glob, webdataset as wds\n"
        "for s in wds.WebDataset(sorted(glob.glob(\"shards/train-*.tar\")), shardshuffle=False).decode(\"pil\"):\n"
        "    image, record = s[\"jpg\"], s[\"json\"]\n```\n",
        "`twig validate <folder>` checks every record, image and checksum; `twig tasks <folder>` "
        "expands the trajectories into task instances.\n",
    ]
    return "\n".join(parts)
