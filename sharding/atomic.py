"""Write-then-rename, so a reader (or a resumed run) never sees a half-written file.

A write that fails (a full disk, a read-only mount) removes its temporary file and raises an
`OSError` that names the final path. `TWIG_FAILPOINT` injects faults into these writes for the
reliability suite (`tests/reliability/`); unset, it costs one dictionary look-up per write:

  pause:<glob>[@n]    the n-th (default first) write of a file matching <glob> stops this
                      process (SIGSTOP) with its temporary file half written, for a test to kill
  enospc:<glob>[@n]   that write and every later matching one fail with ENOSPC half-way

<glob> is matched against `<folder>/<name>` and `<name>` (e.g. `shards/*.tar`, `manifest.json`).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import signal
from pathlib import Path
from typing import Any

_hits = 0  # matching writes this process has made, for TWIG_FAILPOINT's @n


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _failpoint(path: Path) -> str | None:
    """The fault TWIG_FAILPOINT asks for at this write, if any."""
    spec = os.environ.get("TWIG_FAILPOINT")
    if not spec:
        return None
    global _hits
    action, _, target = spec.partition(":")
    pattern, _, nth = target.partition("@")
    if not (fnmatch.fnmatch(f"{path.parent.name}/{path.name}", pattern)
            or fnmatch.fnmatch(path.name, pattern)):
        return None
    _hits += 1
    n = int(nth or 1)
    if _hits == n or (action == "enospc" and _hits > n):
        return action
    return None


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    fault = _failpoint(path)
    try:
        with open(tmp, "wb") as f:
            if fault:
                f.write(data[: len(data) // 2])
                f.flush()
                if fault == "pause":
                    os.kill(os.getpid(), signal.SIGSTOP)
                elif fault == "enospc":
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:  # name the file, not its temp name
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def write_json(path: Path, obj: Any, *, indent: int | None = 2) -> None:
    text = json.dumps(obj, indent=indent, sort_keys=False, ensure_ascii=False)
    write_bytes(path, (text + "\n").encode("utf-8"))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows)
    write_bytes(path, text.encode("utf-8"))
