"""`twig upload`: publish a finished dataset folder to a Hugging Face Hub dataset repo.

What goes: the files `manifest.json` lists (shards, stats, card figures, rejects), `manifest.json`
itself and the card (`README.md`); nothing else in the folder (token caches, progress markers).
Every file is checked against the manifest's size and sha256 before anything is sent.

How: `huggingface_hub.HfApi` (create_repo, list_repo_tree, create_commit). Files go in commits of
bounded size, shards first and `README.md` + `manifest.json` in the last one, so a repo whose
manifest is present is complete. Updating a repo that holds an older build: its `manifest.json` is
removed in the first commit, and the last one deletes the dataset files (`shards/`, `rejects/`,
`card/`, `stats.json`) the new manifest no longer lists; other files in the repo are left alone. An interrupted upload resumes where it stopped at two levels:
files already committed are skipped (their remote LFS sha256 or git blob id equals the local one),
and large files sent but not yet committed are not sent again (the Hub's LFS batch API / Xet
storage answer that it holds them). A commit that fails on a transient error (429, 5xx, a dropped
connection) is retried with backoff, honouring Retry-After; any other error stops the upload with
one line. Files go through Xet storage where the endpoint offers it, else through Git LFS.

The token comes from `HF_TOKEN` or the user's `hf auth login`; it is never logged, printed or
written, and is masked out of any error message.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote

log = logging.getLogger("twig")

TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
LAST = ("README.md", "manifest.json")  # committed last: their presence means the upload is whole
OWNED = ("shards/", "rejects/", "card/", "stats.json")  # remote paths a build owns (stale ones go)
MAX_RETRY_AFTER_S = 3600.0


class UploadError(Exception):
    """A user-facing upload failure: one line, no token."""


@dataclass(frozen=True)
class UploadFile:
    path: str  # in the dataset folder and in the repo
    local: Path
    bytes: int
    sha256: str


@dataclass
class UploadReport:
    repo_id: str
    revision: str
    url: str
    dry_run: bool
    files: list[UploadFile]
    skipped: list[str] = field(default_factory=list)  # already on the Hub, same content
    deleted: list[str] = field(default_factory=list)  # stale files of an older build, removed
    sent: list[str] = field(default_factory=list)  # committed by this run
    commits: int = 0
    retries: int = 0
    transport: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def sent_bytes(self) -> int:
        sizes = {f.path: f.bytes for f in self.files}
        return sum(sizes[p] for p in self.sent)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _safe_rel(rel: str) -> str:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or "\\" in rel:
        raise UploadError(f"manifest.json lists {rel!r}, which is not a path inside the dataset folder")
    return str(p)


def load_manifest(root: Path) -> dict:
    """The manifest of a complete dataset folder with a card, or a one-line UploadError."""
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UploadError(f"{root} has no manifest.json: not a finished dataset folder "
                          "(build it with `twig dataset`)") from None
    except (OSError, ValueError) as e:
        raise UploadError(f"{root}/manifest.json is unreadable: {e}") from None
    if not manifest.get("complete"):
        raise UploadError(f"{root} is a partial build (until={manifest.get('until')!r}); "
                          "only complete datasets are uploaded")
    if not (root / "README.md").is_file():
        raise UploadError(f"{root} has no README.md dataset card")
    return manifest


def upload_plan(root: Path) -> list[UploadFile]:
    """The files to publish, each verified against the manifest; refuses an unfinished or
    damaged dataset (run `twig validate` for details)."""
    root = Path(root)
    manifest = load_manifest(root)
    files: list[UploadFile] = []
    problems: list[str] = []
    for entry in [*manifest.get("shards", []), *manifest.get("files", [])]:
        rel = _safe_rel(entry["path"])
        local = root / rel
        if not local.is_file():
            problems.append(f"{rel} is missing")
            continue
        size = local.stat().st_size
        if size != entry["bytes"] or _sha256(local) != entry["sha256"]:
            problems.append(f"{rel} differs from the manifest (size or sha256)")
            continue
        files.append(UploadFile(rel, local, size, entry["sha256"]))
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UploadError(f"{root} does not match its manifest: {'; '.join(problems[:3])}{more}; "
                          "nothing was uploaded")
    for rel in LAST:
        local = root / rel
        files.append(UploadFile(rel, local, local.stat().st_size, _sha256(local)))
    return files


def git_blob_id(path: Path) -> str:
    """The git object id of a file, as the Hub reports it for files stored without LFS."""
    h = hashlib.sha1()
    h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def commit_batches(files: list[UploadFile], max_bytes: int, max_files: int) -> list[list[UploadFile]]:
    """Files in upload order, cut into commits of at most max_bytes / max_files (a larger file is a
    commit of its own); README.md and manifest.json always form the last commit."""
    body = [f for f in files if f.path not in LAST]
    tail = [f for f in files if f.path in LAST]
    batches: list[list[UploadFile]] = []
    size = 0
    for f in body:
        if not batches or len(batches[-1]) >= max_files or (batches[-1] and size + f.bytes > max_bytes):
            batches.append([])
            size = 0
        batches[-1].append(f)
        size += f.bytes
    if tail:
        batches.append(tail)
    return batches


class _Masked:
    """Masks a secret out of text (error messages from the client or the server)."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret

    def __call__(self, text: str) -> str:
        if self.secret:
            text = text.replace(self.secret, "***")
        return " ".join(text.split())[:600]


@contextlib.contextmanager
def _xet_disabled(disabled: bool) -> Iterator[None]:
    from huggingface_hub import constants

    before = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = disabled or before
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = before


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes, outermost first (the client wraps transfer errors)."""
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 10:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _transient(exc: BaseException) -> bool:
    """A server-side hiccup worth retrying: 408/429/5xx, or a connection that dropped or timed
    out; not offline mode, a malformed endpoint URL, or any 4xx."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    for e in _chain(exc):
        if isinstance(e, OfflineModeIsEnabled | httpx2.UnsupportedProtocol | httpx2.LocalProtocolError):
            return False
        if isinstance(e, HfHubHTTPError) and _status(e) is not None:
            return _status(e) in TRANSIENT_STATUS
        if isinstance(e, httpx2.TransportError | ConnectionError | TimeoutError):
            return True
    return False


def _describe(exc: BaseException) -> str:
    """The outer message plus the innermost cause's, when the client wrapped one."""
    chain = _chain(exc)
    text = str(chain[0]) or type(chain[0]).__name__
    if len(chain) > 1 and str(chain[-1]) and str(chain[-1]) not in text:
        text += f" ({str(chain[-1])})"
    return text


class Uploader:
    """One upload of one dataset folder to one repo and revision."""

    def __init__(self, root: Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                 token: str | None = None, endpoint: str | None = None, transport: str = "auto",
                 max_commit_bytes: int = 2 * 1000**3, max_commit_files: int = 100, retries: int = 6,
                 backoff_s: float = 2.0, sleep: Callable[[float], None] = time.sleep) -> None:
        if transport not in ("auto", "xet", "lfs"):
            raise UploadError(f"transport must be auto, xet or lfs, not {transport!r}")
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise UploadError(f"--repo must be OWNER/NAME, not {repo_id!r}")
        self.root, self.repo_id, self.private = Path(root), repo_id, private
        self.revision = revision or "main"
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        self.transport = transport
        self.max_commit_bytes, self.max_commit_files = max_commit_bytes, max_commit_files
        self.retries, self.backoff_s, self.sleep = retries, backoff_s, sleep
        self._token = token
        self.mask = _Masked(token)

    def run(self, dry_run: bool = False) -> UploadReport:
        url = f"{self.endpoint}/datasets/{self.repo_id}" + (
            f"/tree/{self.revision}" if self.revision != "main" else "")
        if dry_run:
            return UploadReport(self.repo_id, self.revision, url, True, upload_plan(self.root))
        from huggingface_hub import HfApi, constants, get_token

        load_manifest(self.root)  # a folder that is no dataset: say so before anything else
        if constants.HF_HUB_OFFLINE:
            raise UploadError("HF_HUB_OFFLINE is set: unset it (or set it to 0) to upload")
        try:
            token = self._token or get_token()
        except Exception as e:
            raise UploadError(f"cannot read the Hugging Face token: {type(e).__name__}") from None
        if not token:
            raise UploadError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
        self.mask = _Masked(token)
        if self.transport == "xet":
            from huggingface_hub.utils._runtime import is_xet_available

            if not is_xet_available():
                raise UploadError("--transport xet needs the hf_xet package and HF_HUB_DISABLE_XET unset")
        files = upload_plan(self.root)
        report = UploadReport(self.repo_id, self.revision, url, False, files)
        # token=None lets the client resolve (and refresh) the user's login on every request
        api = HfApi(endpoint=self.endpoint, token=self._token)
        try:
            self._prepare_repo(api, report)
            remote = self._remote_files(api, report)
            todo = [f for f in files if not self._same(remote.get(f.path), f)]
            report.skipped = [f.path for f in files if f not in todo]
            if report.skipped:
                log.info("%d of %d files are already on the Hub: skipped", len(report.skipped), len(files))
            planned = {f.path for f in files}
            stale = sorted(p for p in remote if p not in planned and p.startswith(OWNED))
            old_manifest = "manifest.json" in remote and any(f.path == "manifest.json" for f in todo)
            report.transport = self._pick_transport(token)
            batches = commit_batches(todo, self.max_commit_bytes, self.max_commit_files)
            with _xet_disabled(report.transport == "lfs"):
                for i, batch in enumerate(batches, 1):
                    deletes = (["manifest.json"] if i == 1 and old_manifest and len(batches) > 1 else [])
                    deletes += stale if i == len(batches) else []
                    self._commit(api, report, batch, deletes, i, len(batches))
                if stale and not batches:  # nothing new to send, but an older build left files
                    self._commit(api, report, [], stale, 1, 1)
        except UploadError:
            raise
        except Exception as e:  # the client's own errors: one masked line
            raise UploadError(f"upload to {self.repo_id} failed: {self.mask(_describe(e))}") from None
        return report

    def _prepare_repo(self, api, report: UploadReport) -> None:
        """Create the repo (private if asked; otherwise the account's default visibility) and the
        branch; refuse to put data asked to be private into an existing public repo."""
        self._call(report, lambda: api.create_repo(self.repo_id, repo_type="dataset", exist_ok=True,
                                                   private=True if self.private else None))
        if self.private:
            info = self._call(report, lambda: api.repo_info(self.repo_id, repo_type="dataset"))
            if not getattr(info, "private", False):
                raise UploadError(f"{self.repo_id} exists and is public, but --private was given: "
                                  "nothing was uploaded (make it private on the Hub, or drop --private)")
        if self.revision != "main":
            self._call(report, lambda: api.create_branch(self.repo_id, branch=self.revision,
                                                         repo_type="dataset", exist_ok=True))

    @staticmethod
    def _same(remote_id: str | None, f: UploadFile) -> bool:
        """Whether the repo already holds this file: its LFS sha256, or for a file stored in git
        (small text) its git blob id, equals ours."""
        if remote_id is None:
            return False
        return remote_id == f.sha256 or (len(remote_id) == 40 and remote_id == git_blob_id(f.local))

    def _call(self, report: UploadReport, fn: Callable[[], object]) -> object:
        """fn(), retried with exponential backoff (or the server's Retry-After) on transient errors."""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as e:
                if not _transient(e) or attempt == self.retries:
                    raise
                wait = _retry_after(e)
                if wait is None:
                    wait = self.backoff_s * 2**attempt * (0.5 + random.random())
                report.retries += 1
                log.warning("transient error (%s); retry %d/%d in %.1fs", _status(e) or type(e).__name__,
                            attempt + 1, self.retries, wait)
                self.sleep(min(wait, MAX_RETRY_AFTER_S))
        raise AssertionError

    def _remote_files(self, api, report: UploadReport) -> dict[str, str]:
        """path -> LFS sha256 (or git blob id) of what the revision already holds."""
        from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

        def listing() -> dict[str, str]:
            out = {}
            for entry in api.list_repo_tree(self.repo_id, repo_type="dataset", revision=self.revision,
                                            recursive=True):
                if getattr(entry, "lfs", None) is not None:
                    out[entry.path] = entry.lfs.sha256
                elif getattr(entry, "blob_id", None):
                    out[entry.path] = entry.blob_id
            return out

        try:
            return self._call(report, listing)
        except (EntryNotFoundError, RevisionNotFoundError):
            return {}

    def _pick_transport(self, token: str) -> str:
        """Xet where the endpoint offers it (its write-token endpoint answers), else Git LFS."""
        from huggingface_hub.utils._runtime import is_xet_available

        if self.transport != "auto":
            return self.transport
        if not is_xet_available():
            return "lfs"
        from huggingface_hub.utils import build_hf_headers, get_session

        url = f"{self.endpoint}/api/datasets/{self.repo_id}/xet-write-token/{quote(self.revision, safe='')}"
        try:
            r = get_session().get(url, headers=build_hf_headers(token=token), timeout=30)
        except Exception:
            return "lfs"
        from huggingface_hub.utils._xet import parse_xet_connection_info_from_headers

        ok = r.status_code == 200 and parse_xet_connection_info_from_headers(r.headers) is not None
        return "xet" if ok else "lfs"

    def _commit(self, api, report: UploadReport, batch: list[UploadFile], deletes: list[str],
                i: int, n: int) -> None:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        size = sum(f.bytes for f in batch)
        msg = (f"twig upload: {len(batch)} file(s), {human_bytes(size)} ({i}/{n})" if i < n or n == 1
               else "twig upload: card and manifest")
        if deletes:
            msg += f"; remove {len(deletes)} file(s) of an older build"

        def commit() -> object:  # fresh operations per attempt: the client marks them as it goes
            ops: list = []
            for f in batch:
                op = CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(f.local))
                op.upload_info.sha256 = bytes.fromhex(f.sha256)  # verified by upload_plan: no rehash
                ops.append(op)
            ops += [CommitOperationDelete(path_in_repo=p) for p in deletes]
            return api.create_commit(self.repo_id, operations=ops, commit_message=msg,
                                     repo_type="dataset", revision=self.revision)

        self._call(report, commit)
        report.commits += 1
        report.sent += [f.path for f in batch]
        report.deleted += deletes
        log.info("commit %d/%d: %d file(s), %s (%s of %s sent)", i, n, len(batch), human_bytes(size),
                 human_bytes(report.sent_bytes), human_bytes(report.total_bytes))


def upload_dataset(root: Path, repo_id: str, *, dry_run: bool = False, **kwargs) -> UploadReport:
    return Uploader(root, repo_id, **kwargs).run(dry_run=dry_run)
