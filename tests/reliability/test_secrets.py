"""Secrets: every `twig` command that can meet a key runs with a known fake key (and a fake Hugging
Face token) in its environment, with debug logging on; then its stdout and stderr and every file
under the test's folder (outputs, the teacher cache, card, report, task files) are searched for the
key and for pieces of it. Nothing may hold any of them.

The teacher is `annotators.teacher.localserver`, a real HTTP server on 127.0.0.1 speaking the
OpenAI protocol and requiring the key (the stand-in for a remote endpoint), injecting faults so
that error paths run too; the Hub is a real HTTP server on 127.0.0.1 that refuses every token
with 401 (the stand-in for huggingface.co, which the tests cannot reach). Covered: both teacher
recipes (one with the judge), validate, tasks, show, upload (dry run and refused), a key the
server refuses, keys in a wrong format, a key written where a key's variable name goes, a key
passed with `--set`, and (under `make chaos`) `train grpo` with the judge reward.
"""

from __future__ import annotations

import http.server
import io
import logging
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from PIL import Image

from annotators.teacher.localserver import running
from tests.conftest import REPO, TWIG
from tests.reliability.conftest import CHAOS

KEY = f"sk-leakcheck-{secrets.token_hex(16)}"
WRONG = f"sk-leakcheck-{secrets.token_hex(16)}"  # a key the server refuses
HF_TOKEN = f"hf_leakcheck{secrets.token_hex(16)}"


def pieces(secret: str) -> list[bytes]:
    """The secret and pieces of it a partial leak would show (10+ characters of the random
    part: a chance match in 10^6 hex digits of hashes is about 10^-6)."""
    rand = secret.removeprefix("sk-leakcheck-").removeprefix("hf_leakcheck")
    return [s.encode() for s in (secret, rand, rand[:10], rand[-10:], rand[11:21])]


SECRETS = {name: pieces(s) for name, s in (("key", KEY), ("wrong", WRONG), ("hf", HF_TOKEN))}


class Run:
    def __init__(self, figures) -> None:
        self.figures = figures
        self.outputs: list[tuple[str, str]] = []

    def twig(self, tmp: Path, *args: str, env: dict[str, str] | None = None,
             expect: int | None = 0, timeout: int = 240) -> subprocess.CompletedProcess:
        full = {**os.environ, **(env or {})}
        r = subprocess.run([*TWIG, "-v", *args], cwd=tmp, env=full, capture_output=True,
                           text=True, timeout=timeout)
        self.outputs.append((" ".join(args[:2]), r.stdout + r.stderr))
        self.figures.add("secrets", "commands_run")
        if expect is not None:
            assert r.returncode == expect, (args, r.returncode, r.stderr[-3000:])
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        return r

    def here(self, monkeypatch, *args: str, env: dict[str, str], expect: int = 0
             ) -> subprocess.CompletedProcess:
        """The same command in this process (`twig`'s own `main`, its logging to the captured
        stderr as the console script sets it up): quicker than a new interpreter, which spends
        seconds importing torch to build the parser. An exception escaping `main` fails here."""
        from pipeline.cli import main

        for k, v in env.items():
            monkeypatch.setenv(k, v)
        root = logging.getLogger()
        saved, level = root.handlers[:], root.level
        root.handlers = []  # so that main's logging.basicConfig installs its own handler
        out, err = io.StringIO(), io.StringIO()
        try:
            with redirect_stdout(out), redirect_stderr(err):
                try:
                    code = main(["-v", *args])
                except SystemExit as e:
                    code = e.code
        finally:
            root.handlers = saved
            root.setLevel(level)
        self.outputs.append((" ".join(args[:2]), out.getvalue() + err.getvalue()))
        self.figures.add("secrets", "commands_run")
        assert code == expect, (args, code, err.getvalue()[-3000:])
        return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@contextmanager
def refusing_hub() -> Iterator[str]:
    """A Hub stand-in on 127.0.0.1: every request gets 401, as huggingface.co answers a bad token."""

    class Deny(http.server.BaseHTTPRequestHandler):
        def _deny(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            body = b'{"error": "Invalid credentials in Authorization header"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_HEAD = _deny

        def log_message(self, *args) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.timeout(900 if CHAOS else 240)
def test_no_command_writes_or_prints_the_key(tmp_path, monkeypatch, figures):
    run = Run(figures)
    prompts = tmp_path / "secret_train.txt"
    prompts.write_text("\n".join([
        "a red cube on a table", "two green apples", "a blue kite above a tree",
        "a cat on a mat fault:refusal", "a dog on a sofa fault:malformed",
        "a car in the rain fault:length", "a house by a lake fault:always500"]) + "\n")
    images = tmp_path / "images"
    images.mkdir()
    for i, color in enumerate(["red", "green", "blue"]):
        Image.new("RGB", (420 + 30 * i, 400), color).save(images / f"{i}.jpg")
    fast = ["--set", "endpoints.default.timeout_s=1", "--set", "endpoints.default.max_retries=2",
            "--set", "endpoints.default.backoff_base_s=0.05", "--set",
            "endpoints.default.backoff_max_s=0.2", "--set", "teacher.image.size=256x256",
            "--no-progress", "--workers", "1"]
    with running("--api-key", KEY, "--fault-rate", "0.3", "--fault-seed", "5", "--hang-s", "30",
                 "--retry-after-s", "0.1", "--max-image-side", "768") as url:
        env = {"OPENAI_BASE_URL": url, "OPENAI_API_KEY": KEY, "HF_TOKEN": HF_TOKEN}
        pf, imf = tmp_path / "prompt-first", tmp_path / "image-first"
        run.twig(tmp_path, "dataset", "--recipe", "prompt-first", "--model", "gpt-4o-mini",
                 "--set", f"source.prompts=['{prompts}']", "--out", str(pf), *fast, env=env)
        run.twig(tmp_path, "dataset", "--recipe", "image-first", "--model", "gpt-4o",
                 "--set", f"source.path={images}", "--set", "annotate.judge=teacher",
                 "--set", "filter.near_dup_hamming=null", "--out", str(imf), *fast, env=env)
        for out in (pf, imf):  # the teacher answered: there is something to leak into
            assert any((out / "cache" / "teacher").glob("*.jsonl")) and (out / "stats.json").is_file()
        assert len(list((pf / "rejects").glob("*.jsonl"))) > 0
        monkeypatch.chdir(tmp_path)
        run.here(monkeypatch, "validate", str(pf), env=env)
        run.here(monkeypatch, "tasks", str(pf), "--out", str(tmp_path / "tasks.jsonl"), env=env)
        run.here(monkeypatch, "show", str(pf), "--out", str(tmp_path / "report.html"), env=env)
        run.here(monkeypatch, "upload", str(pf), "--repo", "leak/check", "--dry-run", env=env)
        with refusing_hub() as hub:
            r = run.twig(tmp_path, "upload", str(pf), "--repo", "leak/check", expect=None,
                         env={**env, "HF_ENDPOINT": hub, "HF_HUB_OFFLINE": "0"})
            assert r.returncode != 0 and "401" in r.stderr

        # the server refuses the key: the run stops with a message naming the variable only
        r = run.here(monkeypatch, "dataset", "--recipe", "prompt-first", "--model", "gpt-4o-mini",
                     "--set", f"source.prompts=['{prompts}']", "--out", str(tmp_path / "refused"),
                     *fast, env={**env, "OPENAI_API_KEY": WRONG}, expect=1)
        assert "refused the API key (HTTP 401)" in r.stderr and "OPENAI_API_KEY" in r.stderr
        # keys in a wrong format: stopped before any request, the key not echoed
        for bad in (KEY[:20] + "\u2026" + KEY[20:], KEY[:20] + " " + KEY[20:]):
            r = run.here(monkeypatch, "dataset", "--recipe", "prompt-first", "--model", "m",
                         "--set", f"source.prompts=['{prompts}']", "--out",
                         str(tmp_path / "badformat"), *fast, env={**env, "OPENAI_API_KEY": bad},
                         expect=2)
            assert "holds characters an HTTP header cannot carry" in r.stderr
        # a key pasted where its variable's name goes, and a key passed as a setting
        misplaced = tmp_path / "misplaced.yaml"  # holds the key: written by the test, not scanned
        misplaced.write_text(f"endpoints:\n  default:\n    api_key_env: {KEY}\n")
        r = run.here(monkeypatch, "dataset", "--recipe", "prompt-first", "--model", "m",
                     "--config", str(misplaced), "--out", str(tmp_path / "misplaced"), env=env,
                     expect=2)
        assert "api_key_env" in r.stderr
        r = run.here(monkeypatch, "dataset", "--set", f"endpoints.default.api_key={KEY}", "--out",
                     str(tmp_path / "set"), env=env, expect=2)
        assert "endpoints.default.api_key: unknown key" in r.stderr

        if CHAOS:  # slow (a minute on 2 cores): GRPO with the judge reward on a tiny model
            syn = tmp_path / "syn"
            run.twig(tmp_path, "dataset", "--set", "source.count=8", "--out", str(syn),
                     "--no-progress", "--workers", "1", env=env)
            run.twig(tmp_path, "train", "grpo", "--data", str(syn), "--model", "tiny", "--rewards",
                     "judge=gpt-4o-mini", "--steps", "1", "--limit", "2", "--out",
                     str(tmp_path / "grpo"), "--set", "group=2", "--set", "guide_tokens=4",
                     "--set", "reflect_tokens=4", "--no-progress", env=env, timeout=600)

    leaks: list[str] = []
    for what, text in run.outputs:
        data = text.encode()
        leaks += [f"output of `twig {what}`: {name}" for name, ps in SECRETS.items()
                  if any(p in data for p in ps)]
    scanned = n_bytes = 0
    for path in sorted(tmp_path.rglob("*")):
        if path == misplaced or path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        scanned, n_bytes = scanned + 1, n_bytes + len(data)
        leaks += [f"{path.relative_to(tmp_path)}: {name}" for name, ps in SECRETS.items()
                  if any(p in data for p in ps)]
    figures.add("secrets", "files_scanned", scanned)
    figures.add("secrets", "bytes_scanned", n_bytes)
    figures.add("secrets", "leaks", len(leaks))
    assert scanned > 20, scanned  # shards, rejects, caches, cards, markers, reports
    assert not leaks, leaks


def test_the_scan_finds_a_planted_key(tmp_path):
    """The search itself works: a key hidden in a binary file or cut to its last characters is
    found (so a clean scan means something)."""
    (tmp_path / "a.bin").write_bytes(b"\x00\xff" + KEY.encode() + b"\x00")
    (tmp_path / "b.log").write_text(f"auth ...{KEY[-10:]}\n")
    found = [p.name for p in tmp_path.iterdir() if any(x in p.read_bytes() for x in SECRETS["key"])]
    assert sorted(found) == ["a.bin", "b.log"]
    assert REPO.is_dir()
