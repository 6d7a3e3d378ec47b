"""Disk faults: an output folder that cannot be written, and a disk that fills up during a build.

Each must end the run with one clear line on stderr (no traceback), exit code != 0, nothing partial
under a final name and no manifest vouching for an unfinished dataset; after the fault is gone the
same command resumes and finishes with output identical to a build that never failed.

Root is not stopped by file modes, so "not writable" is a path whose parent is a regular file and a
read-only tmpfs mount; "disk full" is a small tmpfs mount. Where mounting is not permitted (an
unprivileged container), disk full is simulated: `TWIG_FAILPOINT=enospc:...` makes the writer's
own writes fail with ENOSPC half-way, and the read-only case is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from annotators.teacher.localserver import running
from tests.conftest import REPO, TWIG
from tests.reliability import _crash as c
from tests.reliability.conftest import CHAOS

pytestmark = pytest.mark.timeout(300)

PROMPTS = [line for line in (REPO / "assets/t2i-compbench/color_train.txt").read_text().splitlines()
           if line][20:26]
RESUME = "; finished work is kept, run again to resume"


def _can_mount() -> bool:
    with tempfile.TemporaryDirectory() as d:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", d], capture_output=True)
        return ok


# TWIG_TEST_NO_MOUNT=1 runs the unprivileged fallbacks where mounting would work
MOUNT = (not os.environ.get("TWIG_TEST_NO_MOUNT") and shutil.which("mount") is not None
         and _can_mount())


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


def twig(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*TWIG, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240)


def one_clear_error(r: subprocess.CompletedProcess) -> str:
    """The run failed with exactly one `twig: error:` line and no traceback; that line."""
    assert r.returncode != 0, r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("twig: error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def test_output_folder_that_cannot_be_written(tmp_path, figures):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    cases = {"parent_is_a_file": (blocker / "out", "Not a directory")}
    ro = tmp_path / "ro"
    with contextlib.ExitStack() as stack:
        if MOUNT:
            stack.enter_context(tmpfs(ro, "1m"))
            (ro / "existing").mkdir()
            remount(ro, "ro")
            cases["read_only_mount_new_folder"] = (ro / "new", "Read-only file system")
            cases["read_only_mount_existing_folder"] = (ro / "existing", "Read-only file system")
        procs = {name: subprocess.Popen([*TWIG, "dataset", "--out", str(out), "--no-progress",
                                         "--set", "source.count=8"], cwd=REPO, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for name, (out, _) in cases.items()}
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=120)
            r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
            line = one_clear_error(r)
            out, why = cases[name]
            figures.add("disk", "trials")
            figures.add("disk", f"faults:{name}")
            assert r.returncode == 2 and str(out) in line and why in line, line
            figures.add("disk", "clear_errors")
        if MOUNT:
            assert not any((ro / "existing").iterdir())


def _prompt_first(out: Path, prompts: Path, *extra: str) -> list[str]:
    return ["dataset", "--recipe", "prompt-first", "--model", "gpt-4o-mini", "--out", str(out),
            "--no-progress", "--workers", "2", "--set", "shard.max_records=3",
            "--set", "teacher.image.size=256x256", "--set", f"source.prompts=['{prompts}']", *extra]


@pytest.fixture(scope="module")
def teacher_build(tmp_path_factory):
    """The bundled local server (a real HTTP server speaking the OpenAI protocol: the stand-in
    for a remote API), the prompts, and a reference build that never met a fault."""
    tmp = tmp_path_factory.mktemp("disk")
    prompts = tmp / "color_train.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    with running("--latency", "0.02") as url:
        env = {**os.environ, "OPENAI_BASE_URL": url, "OPENAI_API_KEY": "sk-local-test"}
        r = twig(*_prompt_first(tmp / "reference", prompts), env=env)
        assert r.returncode == 0, r.stderr
        yield env, prompts, tmp / "reference"


# the disk fills while shards are written / at once, on the teacher's response cache: the cache
# write of a paid answer fails inside a stage, which must stop the run, not reject the record
FULL = {"300k": "shards", "12k": "teacher cache"} if MOUNT else {"simulated": "shards"}


@pytest.mark.parametrize("size", list(FULL))
def test_disk_full_fails_cleanly_and_resumes_to_identical_output(teacher_build, tmp_path, figures,
                                                                 size):
    """A teacher-backed build on a small tmpfs (where mounting is not permitted: ENOSPC injected
    into the writer); then the same command once there is room."""
    env, prompts, ref = teacher_build
    disk = tmp_path / "disk"
    with contextlib.ExitStack() as stack:
        if MOUNT:
            stack.enter_context(tmpfs(disk, size))
            fault, kind = {}, f"disk_full:tmpfs_{size}B ({FULL[size]} fill it)"
        else:
            fault, kind = {"TWIG_FAILPOINT": "enospc:shards/*.tar"}, "disk_full:simulated_ENOSPC"
        out = disk / "out"
        r = twig(*_prompt_first(out, prompts), env={**env, **fault})
        figures.add("disk", "trials")
        figures.add("disk", f"faults:{kind}")
        line = one_clear_error(r)
        assert r.returncode == 1 and line.endswith(RESUME), line
        assert line.startswith(f"twig: error: no space left on the device writing {disk}") \
            or line == f"twig: error: no space left on the device under {out}{RESUME}", line
        figures.add("disk", "clear_errors")
        bad = c.partial_files(out)
        figures.add("disk", "corrupt_files_left", len(bad))
        assert not bad and not (out / "manifest.json").exists()
        rejects = [row for p in (out / "rejects").glob("*.jsonl") for row in p.read_text().splitlines()]
        assert not any("space" in row for row in rejects), "a full disk must not become rejects"

        if MOUNT:
            remount(disk, "size=64m")
        r = twig(*_prompt_first(out, prompts), env=env)
        assert r.returncode == 0, r.stderr
        diffs = c.differences(out, ref)
        figures.add("disk", "resumed_identical", int(not diffs))
        assert not diffs and not c.temp_files(out), diffs
        assert json.loads((out / "manifest.json").read_text())["counts"]["written"] == len(PROMPTS)


@pytest.mark.skipif(not (MOUNT and CHAOS), reason="make chaos, with mount permitted")
def test_disk_turning_read_only_mid_build(tmp_path, figures):
    """The output's file system goes read-only while units are being written (as a failing disk
    is remounted by the kernel): a clear error; once writable again, the build resumes."""
    disk = tmp_path / "disk"
    with tmpfs(disk, "64m"):
        out, ref = disk / "out", tmp_path / "reference"
        args = ["dataset", "--no-progress", "--workers", "2", "--set", "source.count=120",
                "--set", "shard.max_records=6"]
        log = tmp_path / "build.log"
        reference = c.start([*args, "--out", str(ref)])
        proc = c.start([*args, "--out", str(out)], log=log)
        while not (out / ".progress").is_dir() or not any((out / ".progress").iterdir()):
            assert proc.poll() is None, log.read_text()
            time.sleep(0.01)
        while proc.poll() is None:  # a write may hold a file open: try until the remount takes
            if subprocess.run(["mount", "-o", "remount,ro", str(disk)],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.01)
        rc = c.finish(proc, 120)
        err = log.read_text()
        if rc == 0:
            pytest.fail("the build finished before the disk turned read-only; raise source.count")
        figures.add("disk", "trials")
        figures.add("disk", "faults:read_only_mid_build")
        r = subprocess.CompletedProcess(args, rc, "", err)
        line = one_clear_error(r)
        assert rc == 1 and "the file system is read-only" in line and line.endswith(RESUME), line
        figures.add("disk", "clear_errors")
        assert not c.partial_files(out) and not (out / "manifest.json").exists()
        remount(disk, "rw")
        r = twig(*args, "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert c.finish(reference, 120) == 0
        diffs = c.differences(out, ref)
        figures.add("disk", "resumed_identical", int(not diffs))
        assert not diffs and not c.temp_files(out), diffs
