"""`twig show`: one self-contained HTML page of a dataset's trajectories and rejects.

Images are inlined as data: URIs (the stored JPEG bytes), CSS and JS are inline, and a
Content-Security-Policy lets the page load nothing else, so it opens offline from a file or an
attachment. Every piece of text from the data is escaped. The same dataset gives the same bytes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import tarfile
from dataclasses import dataclass
from html import escape
from pathlib import Path

from schemas import CRITERIA, Criteria, Region, SchemaError, TwigRecord, load_record
from sharding.atomic import write_bytes
from sharding.reader import iter_samples

DEFAULT_LIMIT = 200
CRITERION_LABELS = dict(zip(CRITERIA, ("color", "objects", "detail", "spatial", "coherence"),
                            strict=True))


class ReportError(ValueError):
    """The folder cannot be shown (no dataset there, or a shard or rejects file is unreadable)."""


@dataclass(frozen=True)
class ReportSummary:
    out: Path
    kept_shown: int
    kept_total: int
    rejects_shown: int
    rejects_total: int
    bytes: int


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def read_manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not path.is_file():
        raise ReportError(f"{root} is not a dataset folder: it has no manifest.json")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: unreadable manifest ({_one_line(e)})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list) or not all(
            isinstance(s, dict) and isinstance(s.get("path"), str) for s in manifest["shards"]):
        raise ReportError(f"{path}: not a twig-forge manifest (no shard list)")
    return manifest


def read_kept(root: Path, manifest: dict, limit: int | None) -> list[tuple[TwigRecord, bytes]]:
    """(record, jpeg bytes) of the first `limit` samples in manifest shard order."""
    out: list[tuple[TwigRecord, bytes]] = []
    for shard in manifest["shards"]:
        if limit is not None and len(out) >= limit:
            break
        rel = shard["path"]
        try:
            with contextlib.closing(iter_samples(root / rel, exts=("jpg", "json"))) as samples:
                for s in samples:
                    if limit is not None and len(out) >= limit:
                        break
                    if "json" not in s or "jpg" not in s:
                        raise ReportError(f"{rel}: sample {s['__key__']!r} lacks its .jpg or .json")
                    out.append((load_record(s["json"]), s["jpg"]))
        except (OSError, tarfile.TarError, SchemaError) as e:
            raise ReportError(f"{rel}: unreadable shard ({_one_line(e)})") from None
    return out


def read_rejects(root: Path, limit: int | None) -> tuple[list[dict], int]:
    """The first `limit` reject rows (files in name order) and how many there are in all."""
    rows, total = [], 0
    for path in sorted((root / "rejects").glob("*.jsonl")):
        try:
            lines = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
            for line in lines:
                total += 1
                if limit is None or len(rows) < limit:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError("a row is not a JSON object")
                    rows.append(row)
        except (OSError, ValueError) as e:
            raise ReportError(f"rejects/{path.name}: unreadable ({_one_line(e)})") from None
    return rows, total


def trajectory_score(record: TwigRecord) -> int | None:
    """The lowest band score (what the filter's score range checks); None without reflections."""
    scores = [r.reflection.score for r in record.regions if r.reflection]
    return min(scores) if scores else None


# ------------------------------------------------------------------------------------ rendering

def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _overlay(record: TwigRecord) -> str:
    """Inline SVG over the image: a line at each band boundary, each band labelled 1..K."""
    w, h = record.image.width, record.image.height
    font = max(10, h // 14)
    parts = [f'<svg class="bands-svg" viewBox="0 0 {w} {h}" preserveAspectRatio="none" '
             'aria-hidden="true">']
    for region in record.regions:
        y0, y1 = region.box[1], region.box[3]
        flagged = region.reflection is not None and not region.reflection.accepted
        if flagged:
            parts.append(f'<rect class="flag" x="0" y="{y0}" width="{w}" height="{max(0, y1 - y0)}"/>')
        if region.index > 0:
            parts.append(f'<line class="band-line" x1="0" y1="{y0}" x2="{w}" y2="{y0}" '
                         'vector-effect="non-scaling-stroke"/>')
        parts.append(f'<text class="band-label{" bad" if flagged else ""}" x="{font // 3}" '
                     f'y="{y0 + font}" font-size="{font}">{region.index + 1}</text>')
    return "".join(parts) + "</svg>"


def _criteria(criteria: Criteria) -> str:
    cells = []
    for name in CRITERIA:
        v = int(getattr(criteria, name))
        cells.append(f'<span class="crit" title="{_e(name)}: {v}">{_e(CRITERION_LABELS[name])}'
                     f'<span class="bar"><i style="width:{v}%"></i></span><b>{v}</b></span>')
    return f'<div class="crits">{"".join(cells)}</div>'


def _band(region: Region) -> str:
    r0, r1 = region.rows
    ref = region.reflection
    head = f'<b>Band {region.index + 1}</b> <span class="dim">rows {r0}–{r1}</span>'
    if ref is None:
        return (f'<li class="band"><div class="bh">{head} <span class="dim">no reflection</span>'
                f'</div><p class="guide">{_e(region.guide)}</p></li>')
    state = "accepted" if ref.accepted else "flagged"
    same = ref.revised_guide == region.guide
    revised = ("" if same else
               f'<p class="revised"><span class="lbl">revised</span> {_e(ref.revised_guide)}</p>')
    return (f'<li class="band {state}"><div class="bh">{head} <span class="score {state}">'
            f'{ref.score}</span> <span class="badge {state}">{state}</span>'
            f'{" <span class=dim>· guide kept as is</span>" if same else ""}</div>'
            f'<p class="guide">{_e(region.guide)}</p>{_criteria(ref.criteria)}'
            f'<p class="critique"><span class="lbl">critique</span> {_e(ref.critique)}</p>'
            f"{revised}</li>")


def _teacher_lines(roles: dict) -> list[str]:
    """'caption, guide: backend / model @ prompt_version' lines, roles with one teacher together."""
    groups: dict[str, list[str]] = {}
    for role, t in roles.items():
        if isinstance(t, dict):
            u = t.get("usage") or {}
            usage = (f" ({u['calls']} calls, {u.get('prompt_tokens', 0)}+"
                     f"{u.get('completion_tokens', 0)} tok)" if u.get("calls") else "")
            who = (f"{_e(t.get('backend'))} / {_e(t.get('model'))} @ "
                   f"{_e(t.get('prompt_version'))}{_e(usage)}")
            groups.setdefault(who, []).append(_e(role))
    return [f"{', '.join(names)}: {who}" for who, names in groups.items()]


def _provenance(record: TwigRecord) -> str:
    filters = " · ".join(f"{_e(k)} {_e(v)}" for k, v in record.filters.model_dump().items()
                         if v is not None)
    src = record.source
    roles = _teacher_lines(record.teacher.model_dump())
    rows = [("filters", filters or "none"),
            ("source", f"{_e(src.kind)} <code>{_e(src.uri)}</code> "
                       f"({_e(src.license or 'no license given')})"),
            ("teacher", "<br>".join(roles) or "none")]
    if record.scene is not None and record.scene.defect is not None:
        d = record.scene.defect
        band = "?" if d.band is None else d.band + 1
        rows.append(("defect", f"{_e(d.kind)} in band {band}: expected {_e(d.expected)}, "
                               f"drew {_e(d.actual)}"))
    return '<dl class="prov">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _kept_card(record: TwigRecord, jpeg: bytes) -> str:
    score = trajectory_score(record)
    category = record.category or "uncategorised"
    flagged = sum(1 for r in record.regions if r.reflection and not r.reflection.accepted)
    src = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    return (
        f'<article class="card kept" data-kind="kept" data-category="{_e(category)}" '
        f'data-score="{"" if score is None else score}" data-key="{_e(record.key)}">'
        f'<figure class="img"><img src="{src}" width="{record.image.width}" '
        f'height="{record.image.height}" alt="{_e(record.key)}">{_overlay(record)}</figure>'
        f'<div class="body"><h3 class="prompt">{_e(record.prompt)}</h3>'
        f'<p class="meta"><span class="tag">{_e(category)}</span> <span class="tag">'
        f'{_e(record.split)}</span> <code>{_e(record.key)}</code> · score (min band) '
        f'<b>{"–" if score is None else score}</b> · {flagged} of {len(record.regions)} bands '
        f'flagged</p><ol class="bands">{"".join(_band(r) for r in record.regions)}</ol>'
        f"{_provenance(record)}</div></article>"
    )


def _reject_card(row: dict) -> str:
    return (
        f'<article class="card rejected" data-kind="rejected" data-category="" data-score="" '
        f'data-key="{_e(row.get("key"))}"><div class="body"><p class="meta"><span class="tag bad">'
        f'rejected</span> <span class="tag">{_e(row.get("split"))}</span> <code>'
        f'{_e(row.get("key"))}</code> at stage <b>{_e(row.get("stage"))}</b> · <code>'
        f'{_e(row.get("uri"))}</code></p><p class="reason">{_e(row.get("reason"))}</p></div>'
        "</article>"
    )


def _header(root: Path, manifest: dict, shown: tuple[int, int, int, int]) -> str:
    c = manifest.get("counts", {})
    cfg = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    splits = " · ".join(f"{_e(k)} {_e(v.get('records'))}"
                        for k, v in (manifest.get("splits") or {}).items() if isinstance(v, dict))
    teacher = " · ".join(_teacher_lines(manifest.get("teacher") or {}))
    digest = str(manifest.get("config_digest", ""))
    stages = ", ".join(map(str, manifest.get("stages", [])))
    if not manifest.get("complete"):
        stages += f" (incomplete: until {manifest.get('until')})"
    rows = [
        ("counts", f"read {_e(c.get('read'))} · written {_e(c.get('written'))} · rejected "
                   f"{_e(c.get('rejected'))} · tasks {_e(c.get('tasks'))}"),
        ("splits", splits or "–"),
        ("schema", f"{_e(manifest.get('schema'))} · {_e(manifest.get('generator'))} · stages "
                   f"{_e(stages)}"),
        ("source", f"{_e((cfg.get('source') or {}).get('kind'))} · theta "
                   f"{_e((cfg.get('annotate') or {}).get('theta'))} · score range "
                   f"{_e((cfg.get('filter') or {}).get('score_range'))}"),
        ("teacher", teacher or "–"),
        ("config", f'<code title="{_e(digest)}">{_e(digest[:16])}</code>'),
        ("shown", f"{shown[0]} of {shown[1]} kept trajectories and {shown[2]} of {shown[3]} "
                  "rejects (first in shard order)"),
    ]
    return (f"<header><h1>{_e(root.name)} <span class=\"dim\">twig dataset</span></h1>"
            '<dl class="summary">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
            + "</dl></header>")


def _controls(categories: list[str]) -> str:
    options = "".join(f'<option value="{_e(c)}">{_e(c)}</option>' for c in categories)
    return (
        '<nav class="controls"><label>category <select id="f-category"><option value="">all'
        f"</option>{options}</select></label>"
        '<label>score (min band) ≥ <input id="f-score" type="range" min="0" max="100" value="0">'
        ' <output id="f-score-value">0</output></label>'
        '<label>show <select id="f-status"><option value="all">kept and rejected</option>'
        '<option value="kept">kept</option><option value="rejected">rejected</option></select>'
        '</label><span id="count" class="count"></span><span class="dim hint">rejects have no '
        "category or score: a category or score filter hides them</span></nav>"
    )


CSS = """
*{box-sizing:border-box}body{margin:0;font:13px/1.4 system-ui,sans-serif;color:#1d232b;background:#f2f4f7}
header{padding:12px 18px 6px;background:#fff;border-bottom:1px solid #d9dee5}h1{font-size:18px;margin:0 0 6px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 10px;margin:0}dt{color:#66707d}dd{margin:0}
.controls{position:sticky;top:0;z-index:2;display:flex;flex-wrap:wrap;gap:14px;align-items:center;
padding:8px 18px;background:#e8edf3;border-bottom:1px solid #cfd6df}.controls select,.controls input{font:inherit}
.count{font-weight:600}.hint{font-size:11px}main{padding:12px 18px;display:grid;gap:8px}
.card{display:grid;grid-template-columns:260px 1fr;gap:14px;background:#fff;border:1px solid #d9dee5;
border-radius:6px;padding:10px}.card.rejected{grid-template-columns:1fr;border-left:4px solid #c0392b}
[hidden]{display:none!important}.img{position:relative;margin:0;align-self:start}
.img img{display:block;width:100%;height:auto;border-radius:3px}
.bands-svg{position:absolute;inset:0;width:100%;height:100%}
.band-line{stroke:#ffeb3b;stroke-width:2;stroke-dasharray:6 3}.flag{fill:rgba(230,40,40,.25)}
.band-label{fill:#fff;stroke:#000;stroke-width:3px;paint-order:stroke;font-weight:700;font-family:sans-serif}
.band-label.bad{fill:#ff8a80}.prompt{font-size:15px;margin:0 0 4px}.meta{margin:0 0 6px}
.tag{display:inline-block;padding:0 6px;border-radius:9px;background:#e3e8ef;font-size:11px}
.tag.bad{background:#c0392b;color:#fff}code{font-size:11px;color:#4a5563}
.bands{list-style:none;margin:0;padding:0;display:grid;gap:6px}
.band{border-left:3px solid #2e9d5b;padding:2px 0 2px 8px}.band.flagged{border-left-color:#d35400}
.bh{margin-bottom:2px}.score{font-weight:700;padding:0 5px;border-radius:3px;color:#fff;background:#2e9d5b}
.score.flagged{background:#d35400}.badge{font-size:11px;color:#2e9d5b}.badge.flagged{color:#d35400}
.guide,.critique,.revised{margin:2px 0}.lbl{font-size:11px;color:#66707d;text-transform:uppercase}
.crits{display:flex;flex-wrap:wrap;gap:2px 12px;font-size:11px;color:#4a5563}
.crit{display:inline-flex;align-items:center;gap:4px}.bar{display:inline-block;width:46px;height:6px;
background:#e3e8ef;border-radius:3px;overflow:hidden}.bar i{display:block;height:100%;background:#5b8def}
.dim{color:#7a8491}.prov{margin-top:8px;font-size:11px;border-top:1px dashed #d9dee5;padding-top:6px}
.card.rejected{padding:6px 10px}.card.rejected p{margin:0}.reason{font-size:14px;color:#8e2b20}
"""

JS = """
(function () {
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  var cat = document.getElementById('f-category'), min = document.getElementById('f-score');
  var status = document.getElementById('f-status'), out = document.getElementById('f-score-value');
  var count = document.getElementById('count');
  function apply() {
    var c = cat.value, m = Number(min.value), s = status.value, shown = 0;
    cat.disabled = min.disabled = (s === 'rejected');
    out.textContent = String(m);
    cards.forEach(function (card) {
      var ok = s === 'all' || card.dataset.kind === s;
      if (ok && s !== 'rejected') {
        var score = card.dataset.score === '' ? null : Number(card.dataset.score);
        ok = (c === '' || card.dataset.category === c) && (m === 0 || (score !== null && score >= m));
      }
      card.hidden = !ok;
      if (ok) shown += 1;
    });
    count.textContent = 'showing ' + shown + ' of ' + cards.length;
  }
  [cat, min, status].forEach(function (el) { el.addEventListener('input', apply); });
  apply();
})();
"""


def render_report(root: Path, limit: int | None = DEFAULT_LIMIT) -> tuple[str, tuple[int, ...]]:
    """The page for the dataset at `root` (at most `limit` kept and `limit` rejects shown) and
    (kept shown, kept in all, rejects shown, rejects in all)."""
    if limit is not None and limit < 0:
        raise ReportError(f"limit must be >= 0, got {limit}")
    root = Path(root).resolve()
    manifest = read_manifest(root)
    kept = read_kept(root, manifest, limit)
    rejects, rejects_total = read_rejects(root, limit)
    counts = manifest.get("counts") or {}
    kept_total = int(counts.get("written", sum(int(s.get("records", 0)) for s in manifest["shards"])))
    shown = (len(kept), kept_total, len(rejects), rejects_total)
    categories = sorted({r.category or "uncategorised" for r, _ in kept})
    script_hash = base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()
    csp = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
           f"script-src 'sha256-{script_hash}'; form-action 'none'; base-uri 'none'")
    cards = [_kept_card(r, jpg) for r, jpg in kept] + [_reject_card(row) for row in rejects]
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(root.name)}: twig trajectories</title><style>{CSS}</style></head><body>"
        f"{_header(root, manifest, shown)}{_controls(categories)}<main>"
        + "\n".join(cards)
        + (f'</main><p class="dim" style="padding:0 18px 18px">{len(cards)} cards</p>'
           f"<script>{JS}</script></body></html>\n")
    )
    return page, shown


def write_report(root: Path, out: Path, limit: int | None = DEFAULT_LIMIT) -> ReportSummary:
    """Write the page for the dataset at `root` to `out` atomically; raises ReportError."""
    page, shown = render_report(Path(root), limit)
    data = page.encode("utf-8")
    write_bytes(Path(out), data)
    return ReportSummary(Path(out), *shown, len(data))
