"""The code base stays ruff-clean (the style rules live in pyproject.toml)."""

import shutil
import subprocess
import sys

from tests.conftest import REPO


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(REPO / ".venv" / "bin" / "ruff")
    proc = subprocess.run([ruff, "check", "--no-cache", "pipeline", "annotators", "schemas",
                           "sharding", "trainer", "generator", "tests", "bench"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sys.version_info >= (3, 11)
