"""Reliability suite set-up: how many trials to run, and the figures every test adds to.

In CI (`make test`) each test runs a few trials. `make chaos` sets TWIG_CHAOS=1: the same tests run
many more trials, and the figures they count are written to `outputs/reliability/figures.json`
(read by `docs/reliability.md`'s table; `make chaos` prints it).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

CHAOS = os.environ.get("TWIG_CHAOS", "") not in ("", "0")
FIGURES = Path(os.environ.get("TWIG_FIGURES", Path(__file__).resolve().parents[2]
                              / "outputs" / "reliability" / "figures.json"))


def trials(ci: int, chaos: int) -> int:
    """The number of trials for a test: `ci` under `make test`, `chaos` under `make chaos`."""
    return chaos if CHAOS else ci


class Figures:
    """Counters by section (`crash`, `faults`, `hostile`, `secrets`, `disk`, `stuck`), summed over
    the session. `add("crash", "trials")`; `add("faults", "injected:429", 3)`; a figure that must be
    zero is still recorded as 0 with `add(section, key, 0)`."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, int | float]] = defaultdict(dict)

    def add(self, section: str, key: str, n: int | float = 1) -> None:
        self.data[section][key] = self.data[section].get(key, 0) + n

    def set(self, section: str, key: str, value: int | float | str) -> None:
        self.data[section][key] = value


_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return _FIGURES


def pytest_sessionfinish(session, exitstatus):
    if not _FIGURES.data:
        return
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    payload = {"mode": "chaos" if CHAOS else "ci", "exit_status": int(exitstatus),
               "figures": {k: dict(sorted(v.items())) for k, v in sorted(_FIGURES.data.items())}}
    tmp = FIGURES.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(FIGURES)
