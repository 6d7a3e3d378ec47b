"""Print the reliability suite's figures (`outputs/reliability/figures.json`, written by the last
`pytest tests/reliability` run) as the markdown tables of `docs/reliability.md`.

`make chaos` runs it after the suite; by hand: `python -m tests.reliability.report [figures.json]`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.reliability.conftest import FIGURES

ORDER = ["crash", "disk", "stuck", "faults", "hostile", "secrets"]
TITLES = {"crash": "Crash (SIGKILL) and resume", "disk": "Disk faults", "stuck": "Stuck work",
          "faults": "Teacher faults", "hostile": "Hostile inputs", "secrets": "Secrets"}


def render(payload: dict) -> str:
    figures = payload.get("figures", {})
    lines = [f"Mode: `{payload.get('mode')}`, pytest exit status {payload.get('exit_status')}."]
    for section in [s for s in ORDER if s in figures] + sorted(set(figures) - set(ORDER)):
        lines += ["", f"### {TITLES.get(section, section)}", "", "| figure | value |", "|---|---:|"]
        for key, value in figures[section].items():
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            lines.append(f"| {key.replace('|', '/')} | {shown} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else FIGURES
    if not path.is_file():
        print(f"no figures at {path}: run `make chaos` (or pytest tests/reliability) first",
              file=sys.stderr)
        return 1
    sys.stdout.write(render(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
