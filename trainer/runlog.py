"""Training logs: JSON lines in `<out>/log.jsonl` (one object per logged step or evaluation),
TensorBoard scalars when asked, and the progress bar. Only the main process writes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class RunLog:
    def __init__(self, out: Path, main: bool = True, tensorboard: bool = False, resume_step: int = 0):
        self.main = main
        self.path = Path(out) / "log.jsonl"
        self.writer = None
        if not main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError("--tensorboard needs the tensorboard package "
                                 "(pip install -c constraints.txt tensorboard)") from None
            self.writer = SummaryWriter(str(Path(out) / "tensorboard"))

    def _truncate_after(self, step: int) -> None:
        """A resumed run rewrites what followed its checkpoint, so the log reads as one run."""
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except ValueError:
                continue   # a line cut by a crash
        self.path.write_text("".join(f"{x}\n" for x in kept), encoding="utf-8")

    def write(self, entry: dict[str, Any]) -> None:
        if not self.main:
            return
        clean = {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in entry.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean, sort_keys=False) + "\n")
        if self.writer is not None:
            step = int(entry.get("step", 0))
            for k, v in entry.items():
                if k != "step" and isinstance(v, int | float):
                    self.writer.add_scalar(f"{entry.get('kind', 'train')}/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_log(out: Path) -> list[dict[str, Any]]:
    path = Path(out) / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
