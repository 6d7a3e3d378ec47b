"""The dataset card's figures as PNG bytes: reflection-score and text-length distributions, and
example trajectories (the image with its band boundaries beside each band's guide and reflection).

Drawn with matplotlib's object API on the Agg canvas (no pyplot state, safe in any thread). The
PNGs carry no software or time stamp, so the same records give the same bytes on every engine.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

from schemas import TwigRecord

CRITERIA = ("color_accuracy", "object_completeness", "detail_richness", "spatial_relationships",
            "visual_coherence")
BAND_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _band_color(i: int) -> str:
    return BAND_COLORS[i % len(BAND_COLORS)]


def _bands(records: Sequence[TwigRecord]) -> int:
    return max((len(r.regions) for r in records), default=0)


def score_plot(records: Sequence[TwigRecord], theta: float) -> bytes | None:
    """Left: band scores by band, with the regeneration threshold. Right: each criterion's spread."""
    k = _bands(records)
    per_band = [[r.regions[i].reflection.score for r in records
                 if i < len(r.regions) and r.regions[i].reflection] for i in range(k)]
    if not any(per_band):
        return None
    fig = _figure(9.0, 3.4)
    left, right = fig.subplots(1, 2, width_ratios=(1.1, 1))
    bins = list(range(0, 105, 5))
    left.hist([s for s in per_band if s], bins=bins, stacked=True,
              color=[_band_color(i) for i, s in enumerate(per_band) if s],
              label=[f"band {i + 1}" for i, s in enumerate(per_band) if s])
    left.axvline(theta, color="black", linestyle="--", linewidth=1)
    left.text(theta, left.get_ylim()[1] * 0.95, f" theta={theta:g}", va="top", fontsize=8)
    left.set_xlabel("reflection score (0-100)")
    left.set_ylabel("bands")
    left.set_title("Band scores", fontsize=10)
    left.legend(fontsize=8, frameon=False)
    crit = [[getattr(reg.reflection.criteria, c) for r in records for reg in r.regions
             if reg.reflection] for c in CRITERIA]
    right.boxplot(crit, orientation="horizontal", tick_labels=[c.replace("_", " ") for c in CRITERIA],
                  widths=0.6, flierprops={"markersize": 2})
    right.set_xlim(0, 100)
    right.set_xlabel("criterion score (0-100)")
    right.set_title("Criteria", fontsize=10)
    right.tick_params(axis="y", labelsize=8)
    return _png(fig)


def length_plot(records: Sequence[TwigRecord]) -> bytes | None:
    """Left: guide length by band. Right: prompt and revised-guide lengths."""
    k = _bands(records)
    guides = [[len(r.regions[i].guide) for r in records if i < len(r.regions) and r.regions[i].guide]
              for i in range(k)]
    if not any(guides):
        return None
    fig = _figure(9.0, 3.0)
    left, right = fig.subplots(1, 2)
    left.hist([g for g in guides if g], bins=20, stacked=True,
              color=[_band_color(i) for i, g in enumerate(guides) if g],
              label=[f"band {i + 1}" for i, g in enumerate(guides) if g])
    left.set_xlabel("guide length (characters)")
    left.set_ylabel("bands")
    left.set_title("Guides", fontsize=10)
    left.legend(fontsize=8, frameon=False)
    prompts = [len(r.prompt) for r in records if r.prompt]
    revised = [len(reg.reflection.revised_guide) for r in records for reg in r.regions
               if reg.reflection and reg.reflection.revised_guide]
    series = [(v, lbl, c) for v, lbl, c in ((prompts, "prompt", "#555555"),
                                             (revised, "revised guide", "#9467bd")) if v]
    if series:
        right.hist([v for v, _, _ in series], bins=20, label=[lbl for _, lbl, _ in series],
                   color=[c for _, _, c in series])
        right.legend(fontsize=8, frameon=False)
    right.set_xlabel("length (characters)")
    right.set_title("Prompts and revised guides", fontsize=10)
    return _png(fig)


def example_plot(record: TwigRecord, image_bytes: bytes) -> bytes:
    """One trajectory: the image with its band boundaries, and per band the guide and reflection."""
    from PIL import Image

    im = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    fig = _figure(10.0, 4.2)
    ax_img, ax_txt = fig.subplots(1, 2, width_ratios=(1, 1.55))
    ax_img.imshow(im)
    ax_img.set_axis_off()
    for reg in record.regions:
        x0, y0, x1, y1 = reg.box
        color = _band_color(reg.index)
        ax_img.add_patch(_rect(x0, y0, x1 - x0, y1 - y0, color))
        ax_img.text(x0 + 4, y0 + 4, f"{reg.index + 1}", color="white", fontsize=9, va="top",
                    bbox={"facecolor": color, "edgecolor": "none", "pad": 1.5})
    ax_txt.set_axis_off()
    lines: list[tuple[str, str, str]] = [("prompt: " + (record.prompt or "(none)"), "black", "bold")]
    for reg in record.regions:
        color = _band_color(reg.index)
        lines.append((f"band {reg.index + 1} guide: {reg.guide or '(none)'}", color, "normal"))
        if reg.reflection:
            ref = reg.reflection
            verdict = "kept" if ref.accepted else "redraw"
            lines.append((f"reflection {ref.score}/100 ({verdict}): {ref.critique}", "#333333",
                          "normal"))
    y = 1.0
    for text, color, weight in lines:
        wrapped = textwrap.fill(text, width=88, max_lines=3, placeholder=" ...")
        ax_txt.text(0.0, y, wrapped, color=color, fontsize=8, fontweight=weight, va="top",
                    transform=ax_txt.transAxes, wrap=False)
        y -= 0.05 * (wrapped.count("\n") + 1) + 0.02
    return _png(fig)


def _rect(x: float, y: float, w: float, h: float, color: str):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=2)


def pick_examples(records: Sequence[TwigRecord], n: int) -> list[TwigRecord]:
    """Up to n trajectories, deterministic: first one with a band the reflection sent back for
    redrawing, then one per category in order of appearance."""
    chosen: list[TwigRecord] = []
    flagged = next((r for r in records if any(reg.reflection and not reg.reflection.accepted
                                              for reg in r.regions)), None)
    if flagged is not None and n > 0:
        chosen.append(flagged)
    seen = {flagged.category} if flagged is not None else set()
    for r in records:
        if len(chosen) >= n:
            break
        if r.category not in seen and r not in chosen:
            chosen.append(r)
            seen.add(r.category)
    for r in records:  # fewer categories than n: fill in order
        if len(chosen) >= n:
            break
        if r not in chosen:
            chosen.append(r)
    return chosen
