"""`twig show`: the HTML page of a dataset built by the real pipeline, read as text and opened in a
headless Chromium (images decode, guides and band lines show, filters work, nothing is fetched)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from schemas import load_record
from sharding.reader import iter_samples
from sharding.viewer import JS, ReportError, trajectory_score, write_report
from sharding.writer import tar_bytes

EVIL_PROMPT = 'a "quoted" prompt & <b>bold</b> <!-- not a comment -->'
EVIL_GUIDE = 'a red cube <script>alert(1)</script></script><img src=x onerror="window.__pwned=1">'
EVIL_CATEGORY = 'x"><script>window.__pwned=2</script>'
EVIL_CRITIQUE = "<style>body{display:none}</style> it is {{ fine }}"
EVIL_URI = '"><iframe src="//evil.invalid/"></iframe>'
EVIL_REASON = '</script><script>window.__pwned=4</script> too small'


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """40 synthetic scenes, half with a defect; scores below 66 rejected, so the dataset has kept
    trajectories with flagged bands as well as rejects with reasons (4 shards)."""
    from pipeline.config import load_config
    from pipeline.driver import build

    out = tmp_path_factory.mktemp("viewer") / "ds"
    build(load_config(None, ["source.count=40", "source.defect_rate=0.5", "shard.max_records=16",
                             "filter.score_range=[66,100]", "run.progress=false", f"run.out={out}"]))
    return out


def kept_on_disk(root: Path) -> list[tuple]:
    """(record, jpeg bytes) in manifest shard order, read without the viewer."""
    manifest = json.loads((root / "manifest.json").read_text())
    return [(load_record(s["json"]), s["jpg"])
            for shard in manifest["shards"] for s in iter_samples(root / shard["path"])]


def rejects_on_disk(root: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((root / "rejects").glob("*.jsonl"))
            for line in p.read_text().splitlines() if line]


class Page(HTMLParser):
    """Every start tag with its attributes, the text of each card, and all text nodes."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.texts: list[str] = []
        self.scripts: list[str] = []
        self.comments: list[str] = []
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.texts).append(data)

    def handle_comment(self, data):
        self.comments.append(data)

    def cards(self, kind: str) -> list[dict]:
        return [a for t, a in self.tags if t == "article" and a.get("data-kind") == kind]


def test_page_shows_every_trajectory_and_reject_with_its_data(dataset, tmp_path):
    kept, rejects = kept_on_disk(dataset), rejects_on_disk(dataset)
    assert len(kept) == 28 and len(rejects) == 12  # the fixture's mix; both kinds present
    summary = write_report(dataset, tmp_path / "report.html", limit=None)
    assert (summary.kept_shown, summary.kept_total) == (28, 28)
    assert (summary.rejects_shown, summary.rejects_total) == (12, 12)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert summary.bytes == len(html.encode())
    page = Page(html)
    text = " ".join(page.texts)
    cards = page.cards("kept")
    assert [c["data-key"] for c in cards] == [r.key for r, _ in kept]
    for card, (record, _) in zip(cards, kept, strict=True):
        assert card["data-category"] == record.category
        assert card["data-score"] == str(min(g.reflection.score for g in record.regions))
        assert card["data-score"] == str(trajectory_score(record))
        for region in record.regions:
            assert region.guide in text and region.reflection.critique in text
        assert record.prompt in text and record.source.uri in text
    assert any(not g.reflection.accepted for r, _ in kept for g in r.regions)
    assert text.count("flagged") >= 2 and "revised" in text  # a flagged band shows its revision
    # each image is the stored JPEG, byte for byte, as a data: URI
    srcs = [a["src"] for t, a in page.tags if t == "img"]
    assert [base64.b64decode(s.removeprefix("data:image/jpeg;base64,")) for s in srcs] == \
        [jpeg for _, jpeg in kept]
    assert [c["data-key"] for c in page.cards("rejected")] == [r["key"] for r in rejects]
    for row in rejects:
        assert row["reason"] in text and row["uri"] in text
    options = [a["value"] for t, a in page.tags if t == "option"]
    assert sorted({r.category for r, _ in kept}) == [o for o in options if o not in
                                                    ("", "all", "kept", "rejected")]
    assert "read 40 · written 28 · rejected 12" in text
    assert "28 of 28 kept trajectories and 12 of 12 rejects" in text


def test_page_is_self_contained(dataset, tmp_path):
    html = write_report(dataset, tmp_path / "r.html", limit=None).out.read_text()
    outside_images = re.sub(r'"data:image/jpeg;base64,[A-Za-z0-9+/=]+"', "", html)
    assert not re.search(r"https?:|//[a-z]|@import|url\(|<link", outside_images, re.I)
    page = Page(html)
    for tag, attrs in page.tags:
        for name in ("src", "href", "action", "srcset"):
            if name in attrs:
                assert tag == "img" and name == "src" and attrs[name].startswith("data:image/jpeg;")
    csp = next(a["content"] for t, a in page.tags if a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp and "img-src data:" in csp


def test_limit_shows_the_first_n_of_each_and_says_so(dataset, tmp_path):
    kept, rejects = kept_on_disk(dataset), rejects_on_disk(dataset)
    summary = write_report(dataset, tmp_path / "r.html", limit=5)
    page = Page(summary.out.read_text())
    assert [c["data-key"] for c in page.cards("kept")] == [r.key for r, _ in kept[:5]]
    assert [c["data-key"] for c in page.cards("rejected")] == [r["key"] for r in rejects[:5]]
    assert (summary.kept_shown, summary.kept_total, summary.rejects_shown, summary.rejects_total) \
        == (5, 28, 5, 12)
    assert "5 of 28 kept trajectories and 5 of 12 rejects" in " ".join(page.texts)
    empty = Page(write_report(dataset, tmp_path / "e.html", limit=0).out.read_text())
    assert not empty.cards("kept") and not empty.cards("rejected")


def test_same_dataset_gives_the_same_bytes(dataset, tmp_path):
    a = write_report(dataset, tmp_path / "a.html", limit=10).out.read_bytes()
    b = write_report(dataset, tmp_path / "b.html", limit=10).out.read_bytes()
    write_report(dataset, tmp_path / "a.html", limit=10)
    assert a == b == (tmp_path / "a.html").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html", "b.html"]  # no temp files left


@pytest.fixture(scope="module")
def evil_dataset(dataset, tmp_path_factory) -> Path:
    """The dataset with markup and script in its first record's text and in one reject row."""
    root = tmp_path_factory.mktemp("evil") / "ds"
    shutil.copytree(dataset, root)
    manifest = json.loads((root / "manifest.json").read_text())
    shard = root / manifest["shards"][0]["path"]
    samples = list(iter_samples(shard))
    rec = json.loads(samples[0]["json"])
    rec.update(prompt=EVIL_PROMPT, category=EVIL_CATEGORY)
    rec["source"]["uri"] = EVIL_URI
    rec["regions"][0]["guide"] = EVIL_GUIDE
    rec["regions"][0]["reflection"]["critique"] = EVIL_CRITIQUE
    samples[0]["json"] = json.dumps(rec).encode()
    shard.write_bytes(tar_bytes(samples))
    rejects = sorted((root / "rejects").glob("*.jsonl"))[0]
    row = {"key": 'bad"key<', "uri": EVIL_URI, "split": "train", "stage": "read",
           "reason": EVIL_REASON}
    rejects.write_text(json.dumps(row) + "\n" + rejects.read_text())
    return root


def test_text_from_the_data_never_becomes_markup(evil_dataset, tmp_path):
    html = write_report(evil_dataset, tmp_path / "r.html", limit=None).out.read_text()
    page = Page(html)
    assert page.scripts == [JS]  # the page's own script, whole, and no other
    assert [t for t, _ in page.tags].count("script") == 1
    assert [t for t, _ in page.tags].count("style") == 1 and page.comments == []
    assert "iframe" not in {t for t, _ in page.tags}
    assert not any(n.startswith("on") for _, a in page.tags for n in a)
    assert all(a["src"].startswith("data:image/jpeg;") for t, a in page.tags if t == "img")
    text = "".join(page.texts)
    for s in (EVIL_PROMPT, EVIL_GUIDE, EVIL_CRITIQUE, EVIL_URI, EVIL_REASON):
        assert s in text  # shown as text, exactly
    assert page.cards("kept")[0]["data-category"] == EVIL_CATEGORY
    assert page.cards("rejected")[0]["data-key"] == 'bad"key<'


def test_errors_name_the_problem(dataset, tmp_path):
    with pytest.raises(ReportError, match="not a dataset folder: it has no manifest.json"):
        write_report(tmp_path, tmp_path / "r.html")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ReportError, match="unreadable manifest"):
        write_report(tmp_path, tmp_path / "r.html")
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    (broken / "shards" / "train-00001.tar").write_bytes(b"this is not a tar archive\n" * 40)
    with pytest.raises(ReportError, match=r"^shards/train-00001\.tar: unreadable shard \(") as e:
        write_report(broken, tmp_path / "r.html", limit=None)
    assert "\n" not in str(e.value)
    (broken / "shards" / "train-00001.tar").unlink()
    with pytest.raises(ReportError, match=r"shards/train-00001\.tar: unreadable shard"):
        write_report(broken, tmp_path / "r.html", limit=None)
    assert not (tmp_path / "r.html").exists()
    write_report(broken, tmp_path / "r.html", limit=3)  # the first shard alone still shows


# ------------------------------------------------------------------------------ in a browser

def open_page(browser, path: Path):
    """A page on `path` that records console errors, script errors, dialogs, and any request that
    is not for a local file (those are aborted)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    seen = {"errors": [], "requests": [], "blocked": [], "dialogs": []}
    page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))

    def route(r):
        if r.request.url.startswith(("file:", "data:")):
            r.continue_()
        else:
            seen["blocked"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.as_uri())
    return context, page, seen


def visible(page, selector: str) -> list[dict]:
    return page.eval_on_selector_all(selector, "els => els.filter(e => e.offsetParent !== null)"
                                               ".map(e => ({...e.dataset}))")


def test_page_in_chromium_renders_and_filters(browser, dataset, tmp_path):
    kept, rejects = kept_on_disk(dataset), rejects_on_disk(dataset)
    out = write_report(dataset, tmp_path / "report.html", limit=None).out
    context, page, seen = open_page(browser, out)
    n = len(kept) + len(rejects)
    assert page.inner_text("#count") == f"showing {n} of {n}"
    # every image decoded at its stored size
    sizes = page.eval_on_selector_all(
        ".card img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
    assert sizes == [[True, r.image.width, r.image.height] for r, _ in kept]
    # guides show, and a band line sits at each band boundary over the image
    for record, _ in kept[:6]:
        card = page.locator(f'.card[data-key="{record.key}"]')
        assert card.locator(".guide").all_inner_texts() == [g.guide for g in record.regions]
        card.scroll_into_view_if_needed()
        assert card.locator(".guide").first.is_visible()
        img = card.locator("img").bounding_box()
        lines = card.locator(".band-line")
        assert lines.count() == len(record.regions) - 1 >= 1
        for line, region in zip(lines.all(), record.regions[1:], strict=True):
            box = line.bounding_box()
            y = img["y"] + region.box[1] * img["height"] / record.image.height
            assert abs(box["y"] + box["height"] / 2 - y) < 3
            assert box["width"] > 0.95 * img["width"]
        labels = card.locator(".band-label").all_text_contents()
        assert labels == [str(i + 1) for i in range(len(record.regions))]
    page.evaluate("window.scrollTo(0, 0)")
    shot = tmp_path / "screenshot.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    if os.environ.get("TWIG_SCREENSHOT_DIR"):
        keep = Path(os.environ["TWIG_SCREENSHOT_DIR"]) / "screenshot.png"
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep)

    # a category leaves only its trajectories (rejects have no category)
    category = kept[0][0].category
    page.select_option("#f-category", category)
    shown = visible(page, ".card")
    assert shown and {c["category"] for c in shown} == {category}
    assert len(shown) == sum(r.category == category for r, _ in kept)
    assert page.inner_text("#count") == f"showing {len(shown)} of {n}"
    # a minimum score leaves trajectories whose lowest band scores at least that
    page.select_option("#f-category", "")
    page.locator("#f-score").fill("90")
    shown = visible(page, ".card")
    assert [c["key"] for c in shown] == [r.key for r, _ in kept if trajectory_score(r) >= 90]
    assert 0 < len(shown) < len(kept)
    page.locator("#f-score").fill("0")
    # rejected: the rejects, each with its reason
    page.select_option("#f-status", "rejected")
    assert [c["key"] for c in visible(page, ".card")] == [r["key"] for r in rejects]
    reasons = page.locator(".card.rejected .reason")
    assert reasons.all_inner_texts() == [r["reason"] for r in rejects]
    assert reasons.first.is_visible() and page.locator("#f-category").is_disabled()
    assert page.inner_text("#count") == f"showing {len(rejects)} of {n}"
    page.select_option("#f-status", "kept")
    assert len(visible(page, ".card")) == len(kept)
    context.close()
    assert seen["errors"] == [] and seen["blocked"] == [] and seen["dialogs"] == []
    assert all(u.startswith(("file:", "data:")) for u in seen["requests"])


def test_markup_in_the_data_shows_as_text_in_chromium(browser, evil_dataset, tmp_path):
    out = write_report(evil_dataset, tmp_path / "report.html", limit=4).out
    context, page, seen = open_page(browser, out)
    first = page.locator(".card.kept").first
    assert first.locator(".prompt").inner_text() == EVIL_PROMPT
    assert first.locator(".guide").first.inner_text() == EVIL_GUIDE
    assert EVIL_CRITIQUE in first.locator(".critique").first.inner_text()
    assert page.locator(".card.rejected .reason").first.inner_text() == EVIL_REASON
    page.select_option("#f-category", EVIL_CATEGORY)
    assert [c["key"] for c in visible(page, ".card")] == [first.get_attribute("data-key")]
    assert page.evaluate("window.__pwned") is None
    assert page.locator("iframe, .card script, .card style").count() == 0
    context.close()
    assert seen["errors"] == [] and seen["blocked"] == [] and seen["dialogs"] == []


def test_a_dataset_built_until_guide_shows_guides_without_reflections(tmp_path):
    from pipeline.config import load_config
    from pipeline.driver import build

    root = tmp_path / "ds"
    build(load_config(None, ["source.count=6", "until=guide", "run.progress=false",
                             f"run.out={root}"]))
    page = Page(write_report(root, tmp_path / "r.html").out.read_text())
    cards = page.cards("kept")
    assert len(cards) == 6 and all(c["data-score"] == "" for c in cards)
    text = " ".join(page.texts)
    assert text.count("no reflection") == 6 * 3 and "incomplete: until guide" in text
    for record, _ in kept_on_disk(root):
        assert all(g.guide in text for g in record.regions)


def test_twig_show_command(dataset, tmp_path):
    import subprocess

    from tests.conftest import REPO, TWIG

    out = tmp_path / "page.html"
    r = subprocess.run([*TWIG, "show", str(dataset), "--out", str(out), "--limit", "3"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}: 3 of 28 trajectories, 3 of 12 rejects" in r.stdout
    assert out.read_bytes() == write_report(dataset, tmp_path / "again.html", limit=3).out.read_bytes()
    r = subprocess.run([*TWIG, "show", str(tmp_path / "nothing")], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "no manifest.json" in r.stderr and "Traceback" not in r.stderr
