"""Helpers of the crash, disk and stuck-work tests: start `twig dataset` in its own session, stop
and kill it, check what a kill left on disk, and compare a finished folder with a reference.

"Final names" are the dataset's own files (shards, manifest, stats, card, rejects, markers);
`atomic.write_bytes` writes each under a temporary name (`.<name>.tmp-<pid>`) and renames it, so a
file under a final name must always be whole, whatever moment a kill lands on.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

from tests.conftest import REPO, TWIG

TMP_MARK = ".tmp-"


def start(args: list[str], env: dict[str, str] | None = None, log: Path | None = None
          ) -> subprocess.Popen:
    """`twig <args>` in a new session (its pid is the session and group id of all it starts)."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        return subprocess.Popen([*TWIG, *args], cwd=REPO, env={**os.environ, **(env or {})},
                                stdout=out, stderr=out, start_new_session=True)
    finally:
        if log:
            out.close()  # the child holds its own copy


def session(sid: int) -> list[tuple[int, str]]:
    """(pid, state) of every live process in session `sid` (Linux /proc)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append((int(name), fields[0]))
    return found


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the build and every process it started, as a crash or an OOM kill of the job would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    deadline = time.monotonic() + 10
    while session(proc.pid) and time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything forked meanwhile
        except ProcessLookupError:
            break
        time.sleep(0.05)


def wait_stopped(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait until a process of the build stops itself (a TWIG_FAILPOINT pause); False if the build
    exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(state == "T" for _, state in session(proc.pid)):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise TimeoutError(f"build neither paused nor ended within {timeout:g} s")


def finish(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for a build to end; a build that does not end in time is killed and reported."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc)
        raise AssertionError(f"the build hung: still running after {timeout:g} s") from None


# -- what a kill left on disk ----------------------------------------------------------------

def is_temp(p: Path) -> bool:
    return p.name.startswith(".") and TMP_MARK in p.name


def partial_files(out: Path) -> list[str]:
    """Files under a final name that are not whole: a tar without its end, a JSON that does not
    parse, a PNG without its end chunk, or any file the present manifest vouches for that does not
    match its hash. Empty when the folder is sound."""
    bad = []
    for p in sorted(out.rglob("*")):
        if not p.is_file() or is_temp(p) or "cache" in p.relative_to(out).parts:
            continue
        rel = p.relative_to(out).as_posix()
        data = p.read_bytes()
        try:
            if p.suffix == ".tar":
                _check_tar(data)
            elif p.suffix == ".json":
                json.loads(data)
            elif p.suffix == ".jsonl":
                for line in data.decode().splitlines():
                    json.loads(line)
                if data and not data.endswith(b"\n"):
                    raise ValueError("last line cut")
            elif p.suffix == ".png" and not data.endswith(b"IEND\xaeB`\x82"):
                raise ValueError("no IEND chunk")
        except (ValueError, tarfile.TarError, UnicodeDecodeError) as e:
            bad.append(f"{rel}: {e}")
    manifest = out / "manifest.json"
    if manifest.is_file() and not any(b.startswith("manifest.json") for b in bad):
        m = json.loads(manifest.read_text())
        for entry in [*m.get("shards", []), *m.get("files", [])]:
            p = out / entry["path"]
            if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != entry["sha256"]:
                bad.append(f"{entry['path']}: does not match the manifest present beside it")
    return bad


def _check_tar(data: bytes) -> None:
    if len(data) % 512 or data[-1024:] != bytes(1024):
        raise ValueError("no end-of-archive blocks (cut short)")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            f = tar.extractfile(member)
            if f is None or len(f.read()) != member.size:
                raise ValueError(f"member {member.name} cut short")


def temp_files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if is_temp(p))


# -- comparing a finished folder with the reference -------------------------------------------

def dataset_files(out: Path) -> dict[str, bytes]:
    """Every file that makes up the dataset (all but the teacher cache), by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and "cache" not in p.relative_to(out).parts}


def _without_run_history(rel: str, data: bytes) -> bytes:
    """The file with the one part that legitimately depends on how many runs it took removed:
    what the last run of each unit sent over the network (`stats.json` teacher.last_run, each
    marker's teacher.requests, and the manifest's hash of stats.json)."""
    if rel == "stats.json":
        obj = json.loads(data)
        obj["teacher"].pop("last_run")
    elif rel.startswith(".progress/"):
        obj = json.loads(data)
        obj["teacher"].pop("requests")
    elif rel == "manifest.json":
        obj = json.loads(data)
        obj["files"] = [f for f in obj.get("files", []) if f["path"] != "stats.json"]
    else:
        return data
    return json.dumps(obj, sort_keys=True).encode()


def differences(out: Path, ref: Path) -> list[str]:
    """What differs between two finished folders: byte for byte, except the run-history fields
    (`_without_run_history`), which are checked here instead: every unit's requests sent plus
    cache hits equal the reference's, and the manifest's entry for stats.json is its real hash."""
    got, want = dataset_files(out), dataset_files(ref)
    diffs = [f"missing {p}" for p in sorted(set(want) - set(got))]
    diffs += [f"extra {p}" for p in sorted(set(got) - set(want))]
    for rel in sorted(set(got) & set(want)):
        if _without_run_history(rel, got[rel]) != _without_run_history(rel, want[rel]):
            diffs.append(f"differs: {rel}")
    if "stats.json" in got and "stats.json" in want:
        a = json.loads(got["stats.json"])["teacher"]["last_run"]
        b = json.loads(want["stats.json"])["teacher"]["last_run"]
        if a["requests"] + a["cache_hits"] != b["requests"] + b["cache_hits"]:
            diffs.append(f"stats.json last_run: {a} does not add up to the reference's {b}")
        m = json.loads(got.get("manifest.json", b"{}"))
        entry = next((f for f in m.get("files", []) if f["path"] == "stats.json"), None)
        if entry and entry["sha256"] != hashlib.sha256(got["stats.json"]).hexdigest():
            diffs.append("manifest.json: its hash of stats.json is not the file's")
    return diffs


def record_keys(out: Path) -> list[str]:
    """Every record key in the folder's final shards (repeats kept)."""
    keys = []
    for p in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(p) as tar:
            keys += [m.name.rsplit(".", 1)[0] for m in tar if m.name.endswith(".json")]
    return keys


# -- the teacher side ---------------------------------------------------------------------------

def server_keys(url: str) -> dict:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/_keys", timeout=10) as r:
        return json.loads(r.read())


def cached_keys(cache: Path) -> set[str]:
    """The request keys whose answers are in the cache (whole lines only, as the client reads it)."""
    keys = set()
    for seg in cache.glob("*.jsonl"):
        for line in seg.read_bytes().splitlines(keepends=True):
            key, sep, _ = line.partition(b"\t")
            if sep and line.endswith(b"\n") and len(key) == 64:
                keys.add(key.decode())
    return keys
