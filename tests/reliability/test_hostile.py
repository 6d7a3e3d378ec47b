"""Hostile inputs: bad images, bad tars, bad configs and bad prompt files, through the real CLI and
pipeline. Each must give a clear error (exit 2, one `twig: error:` message naming the problem, no
stack trace) or a reject line with its reason, and nothing may be written outside the output
folder (every test compares the whole temporary tree before and after).

The corpus is built at test time (`_hostile_inputs.py`): the foundation suite's bad images plus a
PNG and a JPEG declaring 10^10 and 4*10^9 pixels, animated GIF and PNG (decided: the first frame
is the image), a zip renamed .jpg, SVG, HTML, 10 MB EXIF and ICC blocks; tars with `../../x`,
absolute and drive-letter paths, symlinks, hardlinks, devices, duplicate keys, empty keys, an
oversized member and keys with spaces, Unicode, newlines, `%`, `?`, `#`; configs with unknown
keys, wrong types, negative and non-finite numbers, missing endpoints, keys where key names go;
prompt files with blank lines, a 100 KB line, NUL and escape bytes, a BOM, CR line ends and
invalid UTF-8. Teacher-backed runs use `annotators.teacher.localserver`, a real HTTP server on
127.0.0.1 speaking the OpenAI protocol (the stand-in for a remote endpoint).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from pipeline.cli import main as twig_main
from pipeline.config import load_config
from pipeline.driver import build
from schemas import load_record
from sharding.reader import iter_samples
from sharding.validate import validate_dataset
from tests.conftest import REPO, TEST_KEY, TWIG
from tests.pipeline.test_sources import near
from tests.reliability import _hostile_inputs as H
from tests.reliability.conftest import CHAOS, trials

pytestmark = pytest.mark.timeout(1200 if CHAOS else 120)


# ----------------------------------------------------------------------------- helpers


def tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every path under root (links not followed): kind and size."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
            out[str(p.relative_to(root))] = (kind, st.st_size if kind == "file" else 0)
    return out


@contextlib.contextmanager
def only_writes_under(root: Path, *allowed: Path):
    """Fail if anything under root other than the allowed folders appears, changes or goes, or if
    any symlink appears anywhere (an extracted link would be one)."""
    before = tree(root)
    yield
    after = tree(root)
    inside = [str(a.relative_to(root)) for a in allowed]

    def outside(path: str) -> bool:
        return not any(path == a or path.startswith(a + os.sep) for a in inside)

    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p) and outside(p)}
    assert not changed, f"written outside the output folder: {sorted(changed)}"
    links = [p for p, (kind, _) in after.items() if kind == "link" and before.get(p) != after[p]]
    assert not links, f"symlinks created: {links}"


def outputs(out: Path) -> tuple[dict[str, tuple], list[dict]]:
    """({source uri: (record, decoded image)}, reject rows), checking the funnel adds up."""
    manifest = json.loads((out / "manifest.json").read_text())
    got = {}
    for shard in manifest["shards"]:
        for s in iter_samples(out / shard["path"]):
            rec = load_record(s["json"])
            assert rec.source.uri not in got, f"{rec.source.uri!r} written twice"
            img = Image.open(io.BytesIO(s["jpg"]))
            img.load()
            assert len(s["jpg"]) < 400_000  # no 10 MB metadata block rides along
            got[rec.source.uri] = (rec, img)
    rows = [json.loads(line) for p in sorted((out / "rejects").glob("*.jsonl"))
            for line in p.read_text(encoding="utf-8").splitlines() if line]
    c = manifest["counts"]
    assert c["read"] == c["written"] + c["rejected"] == len(got) + len(rows)
    assert validate_dataset(out, check_images=False).ok
    return got, rows


def twig(*args: str) -> tuple[int, str, str]:
    """`twig ...` in this process (the same `main` the console script runs): exit code, stdout,
    stderr. An exception escaping `main` would be a stack trace for a user, so it fails here."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = twig_main(list(args))
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def assert_clear_error(code: int, err: str, words: tuple[str, ...], secret: str | None = None):
    assert code == 2, (code, err)
    assert err.startswith("twig: error: ") and "Traceback" not in err, err
    lines = err.rstrip("\n").split("\n")
    assert all(line.startswith("  ") for line in lines[1:]) and len(lines) <= 4, err
    for w in words:
        assert w in err, (w, err)
    if secret:
        assert secret not in err and secret[-8:] not in err, err


def check_rejects(rows: list[dict], expected: dict[str, tuple[str, ...]], figures, category: str):
    by_uri = {r["uri"]: r for r in rows}
    assert len(by_uri) == len(rows), "a reject written twice"
    for uri, words in expected.items():
        row = by_uri.get(uri)
        assert row is not None, f"{uri!r} is neither written nor rejected"
        assert any(w.lower() in row["reason"].lower() for w in words), row
    figures.add("hostile", f"tried:{category}", len(expected))
    figures.add("hostile", "tried", len(expected))
    figures.add("hostile", "handled", len(expected))


# ----------------------------------------------------------------------------- 1. bad images


def tar_key(name: str) -> str:
    """'animated.gif' -> 'animated_gif' (so animated.gif and animated.png are two samples)."""
    return name.replace(".", "_")


def tar_member(name: str) -> str:
    return f"{tar_key(name)}.{name.rsplit('.', 1)[1]}"


@pytest.fixture(scope="module")
def image_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    cases = H.image_cases()
    (root / "src").mkdir()
    for c in cases:
        (root / "src" / c.name).write_bytes(c.data)
    with tarfile.open(root / "images.tar", "w") as tar:  # the same files as WebDataset samples
        for c in cases:
            H.add(tar, tar_member(c.name), c.data)
            H.add(tar, tar_key(c.name) + ".txt", f"the {c.name} sample")
    return root, cases


@pytest.mark.parametrize("kind", ["folder", "webdataset"])
def test_bad_images_are_rejects_with_reasons(image_corpus, kind, tmp_path, figures):
    root, cases = image_corpus
    out = tmp_path / "out"
    src = [f"source.path={root / 'src'}"] if kind == "folder" else [
        f"source.urls=['{root / 'images.tar'}']"]
    uri = (lambda name: f"folder://{name}") if kind == "folder" else (
        lambda name: f"{root / 'images.tar'}#{tar_key(name)}")
    with only_writes_under(tmp_path, out), only_writes_under(root):
        config = load_config(None, [f"source.kind={kind}", *src, "until=prepare", f"run.out={out}",
                                    "run.progress=false", "run.workers=1",
                                    f"image.max_pixels={H.MAX_PIXELS}",
                                    f"image.max_file_bytes={H.MAX_FILE_BYTES}"])
        build(config)
    got, rows = outputs(out)
    assert len(got) + len(rows) == len(cases)
    check_rejects(rows, {uri(c.name): c.reject for c in cases if c.reject}, figures, "image")
    for c in cases:
        if c.reject:
            continue
        rec, img = got[uri(c.name)]
        assert img.size == (384, 384) and img.mode == "RGB"
        if c.top:
            assert near(img.getpixel((192, 40)), c.top), (c.name, img.getpixel((192, 40)))
        if kind == "webdataset":
            assert rec.prompt == f"the {c.name} sample"
        figures.add("hostile", "tried:image")
        figures.add("hostile", "tried")
        figures.add("hostile", "handled")


def test_fuzzed_images_are_records_or_rejects_never_errors(tmp_path, figures):
    """Seeded mutations of valid images in every listed format and several modes (CI a few
    dozen, `make chaos` thousands): each is a record or a reject the decoder explains, never a
    `stage error` (an exception nobody expected) and never a crash of the run."""
    files = H.fuzzed_images(seed=8, n=trials(60, 10000))
    src, out = tmp_path / "fuzz", tmp_path / "out"
    src.mkdir()
    for name, data in files:
        (src / name).write_bytes(data)
    with only_writes_under(tmp_path, out):
        build(load_config(None, ["source.kind=folder", f"source.path={src}", "until=prepare",
                                 f"run.out={out}", "run.progress=false", "run.workers=1",
                                 "image.min_side=16", f"image.max_pixels={H.MAX_PIXELS}",
                                 "filter.near_dup_hamming=null"]))
    got, rows = outputs(out)
    assert len(got) + len(rows) == len(files)
    unexpected = [r for r in rows if r["stage"] not in ("read", "prepare") or "stage error" in r["reason"]]
    assert not unexpected, unexpected[:5]
    figures.add("hostile", "tried:fuzzed_image", len(files))
    figures.add("hostile", "fuzzed_written", len(got))
    figures.add("hostile", "tried", len(files))
    figures.add("hostile", "handled", len(files))


# ----------------------------------------------------------------------------- 2. bad tars


def test_bad_tar_members_are_rejects_and_nothing_escapes(tmp_path, monkeypatch, figures):
    data = tmp_path / "data"
    data.mkdir()
    good, bad = H.tar_cases(data / "hostile.tar")
    cwd = tmp_path / "cwd" / "a" / "b"  # '../../x.jpg' extracted here would land in tmp_path/cwd
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    out = tmp_path / "out"
    with only_writes_under(tmp_path, out):
        build(load_config(None, ["source.kind=webdataset", f"source.urls=['{data}/hostile.tar']",
                                 "until=prepare", f"run.out={out}", "run.progress=false",
                                 "run.workers=1", "image.max_file_bytes=1000000"]))
    for name in ("x.jpg", "y.jpg", "z.jpg", "outside.jpg", "passwd"):
        assert not [p for p in tmp_path.rglob(name)], name
    got, rows = outputs(out)
    t = f"{data}/hostile.tar#"
    assert set(got) == {t + k for k in good}, sorted(set(got) ^ {t + k for k in good})
    for key, prompt in good.items():
        rec, img = got[t + key]
        assert rec.prompt == prompt and rec.key.startswith("wds-") and img.size == (384, 384)
    assert near(got[t + "anim"][1].getpixel((192, 192)), H.RED)  # the GIF's first frame
    assert len(rows) == len(bad)
    check_rejects(rows, {t + k: words for k, words in bad.items()}, figures, "tar")
    figures.add("hostile", "tried:tar_odd_key", len(good))
    figures.add("hostile", "tried", len(good))
    figures.add("hostile", "handled", len(good))


def test_unreadable_tars_are_clear_errors(tmp_path, figures):
    whole = io.BytesIO()
    with tarfile.open(fileobj=whole, mode="w") as tar:
        H.add(tar, "a.jpg", H.jpeg_bytes(H.textured(70, 600, 600)))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.getvalue()[:3000])  # ends inside the member
    gz = tmp_path / "fake.tar"
    gz.write_bytes(b"\x1f\x8b\x08\x00" + b"\0" * 64)  # a gzip header and nothing valid after it
    out = tmp_path / "out"
    for tar_path in (cut, gz, tmp_path / "missing.tar"):
        with only_writes_under(tmp_path, out):
            code, _, err = twig("dataset", "--set", "source.kind=webdataset", "--set",
                                f"source.urls=['{tar_path}']", "--until", "prepare", "--out",
                                str(out), "--no-progress", "--workers", "1")
        assert_clear_error(code, err, ("cannot read tar", str(tar_path)))
        assert not (out / "manifest.json").exists()
        figures.add("hostile", "tried:tar_file")
        figures.add("hostile", "tried")
        figures.add("hostile", "handled")


# ----------------------------------------------------------------------------- 3. bad configs

FAKE_KEY = "sk-proj-9Qz4Hk2Lw7Rt5Yx1Vb8Nc3Md6"
PROMPTS = "source: {kind: prompts, prompts: [assets/t2i-compbench/color_train.txt]}\n"
CONFIGS = [  # (name, file text or bytes, words the error must hold)
    ("unknown_top.yaml", "colour: red\n", ("colour", "unknown key")),
    ("unknown_nested.yaml", "source:\n  cuont: 10\n", ("source.cuont", "unknown key")),
    ("wrong_type.yaml", "source: {count: many}\n", ("source.count", "integer")),
    ("wrong_section.yaml", "shard: [1, 2]\n", ("shard",)),
    ("wrong_bool.yaml", "run: {progress: maybe}\n", ("run.progress", "boolean")),
    ("negative.yaml", "shard: {max_records: -5}\n", ("shard.max_records", "greater than")),
    ("negative_limit.yaml", "limit: -3\n", ("limit", "greater than")),
    ("negative_timeout.yaml", "endpoints: {default: {timeout_s: -1}}\n",
     ("endpoints.default.timeout_s", "greater than 0")),
    ("negative_retries.yaml", "endpoints: {default: {max_retries: -2}}\n",
     ("endpoints.default.max_retries",)),
    ("infinite_timeout.yaml", "endpoints: {default: {timeout_s: .inf}}\n",
     ("endpoints.default.timeout_s", "finite")),
    ("nan_rate.yaml", "source: {defect_rate: .nan}\n", ("source.defect_rate",)),
    ("huge_count.yaml", "source: {count: 100000000000000000000000}\n", ("source.count", "less than")),
    ("endpoint_missing.yaml", PROMPTS + "teacher: {model: m, guide: {endpoint: vllm}}\n",
     ("teacher.guide.endpoint 'vllm' is not in endpoints",)),
    ("no_endpoints.yaml", PROMPTS + "teacher: {model: m}\nendpoints: {}\n",
     ("is not in endpoints (none)",)),
    ("null_endpoint.yaml", PROMPTS + "teacher: {model: m}\nendpoints: {default: null}\n",
     ("endpoints.default",)),
    ("no_model.yaml", PROMPTS, ("teacher.guide needs a model",)),
    ("bad_url.yaml", PROMPTS + "teacher: {model: m}\nendpoints: {default: {base_url: gpu box}}\n",
     ("endpoints.default.base_url", "http://")),
    ("key_in_config.yaml", f"endpoints: {{default: {{api_key: {FAKE_KEY}}}}}\n",
     ("endpoints.default.api_key", "unknown key")),
    ("key_as_variable.yaml", PROMPTS + f"teacher: {{model: m}}\nendpoints: {{default: "
     f"{{api_key_env: {FAKE_KEY}}}}}\n", ("endpoints.default.api_key_env", "never the key itself")),
    ("until_not_in_recipe.yaml", "until: draw\n", ("not a stage of the image-first recipe",)),
    ("until_before_image.yaml", PROMPTS + "teacher: {model: m}\nuntil: guide\n",
     ("no image before prepare",)),
    ("version.yaml", "version: 2\n", ("version",)),
    ("syntax.yaml", "source: {kind: [\n", ("not valid YAML",)),
    ("top_list.yaml", "- a\n- b\n", ("top level must be a mapping",)),
    ("binary.yaml", b"\xff\xfe\x00\x01\x80garbage", ("not a UTF-8 text file",)),
    ("broken.toml", "source = {\n", ("not valid TOML",)),
    ("folder_is_file.yaml", "source: {kind: folder, path: README.md}\nuntil: prepare\n",
     ("source.path", "not a folder")),
    ("prompts_missing.yaml", "source: {kind: prompts, prompts: [nowhere/*.txt]}\nteacher: {model: m}\n"
     "endpoints: {default: {base_url: 'http://127.0.0.1:9/v1'}}\n", ("no file matches",)),
]


@pytest.mark.parametrize("name, text, words", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_config_mistakes_are_one_clear_error(name, text, words, tmp_path, monkeypatch, figures):
    monkeypatch.chdir(REPO)  # the configs name repo files (README.md, assets/...)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "out"
    with only_writes_under(tmp_path, out):
        code, _, err = twig("dataset", "--config", str(path), "--out", str(out), "--no-progress")
    assert_clear_error(code, err, words, secret=FAKE_KEY)
    assert not [p for p in out.rglob("*")], "a config mistake wrote output"
    figures.add("hostile", "tried:config")
    figures.add("hostile", "tried")
    figures.add("hostile", "handled")


@pytest.mark.parametrize("args, words", [
    (["--config", "nowhere.yaml"], ("config file not found",)),
    (["--limit", "0"], ("limit", "greater than")),
    (["--workers", "-2"], ("run.workers",)),
    (["--set", "source"], ("key=value",)),
    (["--set", "source.count=1e400"], ("source.count",)),
    (["--set", "run.out="], ("run.out",)),
    (["--recipe", "prompt-first", "--model", "m"], ("no API key", "OPENAI_API_KEY")),
    (["--out", "README.md/sub"], ("cannot create output folder",)),
])
def test_command_line_mistakes_are_one_clear_error(args, words, tmp_path, monkeypatch, figures):
    monkeypatch.chdir(REPO)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    if not any(a.startswith(("--out", "run.out")) for a in args):
        args = [*args, "--out", str(tmp_path / "out")]
    with only_writes_under(tmp_path, tmp_path / "out"):
        code, _, err = twig("dataset", "--no-progress", *args)
    assert_clear_error(code, err, words)
    assert not [p for p in (tmp_path / "out").rglob("*")], "a mistake wrote output"
    figures.add("hostile", "tried:config")
    figures.add("hostile", "tried")
    figures.add("hostile", "handled")


def test_config_mistake_through_the_real_command(tmp_path, figures):
    """The console entry point as a user runs it: exit 2, one message, no stack trace."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("source:\n  kind: folder\n  path: 12\n  colour: red\nshard: {max_records: -1}\n")
    with only_writes_under(tmp_path):
        r = subprocess.run([*TWIG, "dataset", "--config", str(bad), "--out", str(tmp_path / "o")],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert_clear_error(r.returncode, r.stderr, ("source.colour: unknown key",
                                                "shard.max_records: Input should be greater"))
    figures.add("hostile", "tried:config")
    figures.add("hostile", "tried")
    figures.add("hostile", "handled")


# ----------------------------------------------------------------------------- 4. prompt files


def test_hostile_prompt_file_lines_are_rejects_or_clean_prompts(local_openai, tmp_path, monkeypatch,
                                                               figures):
    data, good, bad = H.prompt_file()
    (tmp_path / "hostile_train.txt").write_bytes(data)
    out = tmp_path / "out"
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", local_openai.url)
    with only_writes_under(tmp_path, out):
        code, _, err = twig("dataset", "--recipe", "prompt-first", "--model", "gpt-4o-mini",
                            "--set", f"source.prompts=['{tmp_path / 'hostile_train.txt'}']",
                            "--set", "teacher.image.size=256x256", "--set",
                            "filter.near_dup_hamming=null", "--out", str(out), "--no-progress",
                            "--workers", "1")
    assert code == 0, err
    got, rows = outputs(out)
    assert {u: r.prompt for u, (r, _) in got.items()} == {
        f"hostile_train.txt:{n}": p for n, p in good.items()}
    assert all(r.category == "hostile" for r, _ in got.values())
    assert len(rows) == len(bad)
    check_rejects(rows, {f"hostile_train.txt:{n}": w for n, w in bad.items()}, figures, "prompts")
    assert all(r["stage"] == "read" for r in rows)
    figures.add("hostile", "tried:prompts", len(good))
    figures.add("hostile", "tried", len(good))
    figures.add("hostile", "handled", len(good))


@pytest.mark.parametrize("content, words", [
    (b"a red apple\n\xff\xfe caf\xe9\n", ("not UTF-8 text", "at byte 12")),
    (H.png_bytes(H.textured(1, 32, 32)), ("not UTF-8 text",)),
    (b"\n \n\t\n", ("the source has no inputs",)),
], ids=["invalid_utf8", "binary", "only_blank_lines"])
def test_unusable_prompt_files_are_clear_errors(content, words, tmp_path, figures):
    path = tmp_path / "bad_train.txt"
    path.write_bytes(content)
    out = tmp_path / "out"
    with only_writes_under(tmp_path, out):
        code, _, err = twig("dataset", "--set", "source.kind=prompts", "--set",
                            f"source.prompts=['{path}']", "--set", "teacher.model=m", "--set",
                            "endpoints.default.base_url=http://127.0.0.1:9/v1", "--out", str(out),
                            "--no-progress")
    assert_clear_error(code, err, words)
    assert not (out / "manifest.json").exists()
    figures.add("hostile", "tried:prompts")
    figures.add("hostile", "tried")
    figures.add("hostile", "handled")


# ----------------------------------------------------------------------------- 5. bad dataset folders


@pytest.mark.parametrize("manifest", ['{"shards": 5}', '{"shards": [{"nopath": 1}]}', "[]", "{bad"])
def test_tasks_on_a_tampered_manifest_is_a_clear_error(manifest, tmp_path, figures):
    (tmp_path / "manifest.json").write_text(manifest)
    with only_writes_under(tmp_path):
        code, _, err = twig("tasks", str(tmp_path), "--out", str(tmp_path / "t.jsonl"))
    assert_clear_error(code, err, ("has no readable manifest.json",))
    figures.add("hostile", "tried:dataset_folder")
    figures.add("hostile", "tried")
    figures.add("hostile", "handled")
