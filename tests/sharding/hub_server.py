"""Test double for the Hugging Face Hub's upload protocol: a real HTTP server on 127.0.0.1.

The Hub cannot be reached from tests, so this server speaks the part of its protocol that
`huggingface_hub` (2.4) uses to upload a folder over Git LFS, with the same status codes, JSON
shapes and `X-Error-Code` / `X-Error-Message` headers the client parses. State is in memory.
Model repos are served under `/api/models/...` and `/{ns}/{name}/...`, datasets and spaces under
their prefix; `{repo}` below is `{ns}/{name}`.

  POST /api/repos/create                   create (409 if it exists); main gets .gitattributes
  GET  /api/whoami-v2                      the configured user
  POST /api/validate-yaml                  README.md front matter must parse as a YAML mapping
  GET  /api/datasets/{repo}[/revision/{rev}]            repo_info (404 RepoNotFound)
  GET  /api/datasets/{repo}/tree/{rev}[/{path}]         list_repo_tree (Link-header pages)
  POST /api/datasets/{repo}/paths-info/{rev}            get_paths_info
  POST /api/datasets/{repo}/preupload/{rev}             uploadMode lfs/regular + oid of the
                                                        file already at that path
  POST /api/datasets/{repo}/commit/{rev}                ndjson commit to an existing branch
  POST /api/datasets/{repo}/branch/{branch}             create_branch (409 if it exists)
  GET  /api/datasets/{repo}/xet-write-token/{rev}       404: no Xet here, so clients must run
                                                        with HF_HUB_DISABLE_XET (LFS path)
  POST /datasets/{repo}.git/info/lfs/objects/batch      Git LFS batch: objects already stored
                                                        come back without actions
  POST /datasets/{repo}.git/info/lfs/objects/verify     LFS verify
  PUT  /_lfs/{type}/{repo}/{oid}?size&sig[&part]        presigned object (or part) upload:
                                                        checks sha256 and size (400 otherwise)
  POST /_lfs/{type}/{repo}/{oid}?size&sig               multipart completion
  GET|HEAD /datasets/{repo}/resolve/{rev}/{path}        download (ETag, X-Repo-Commit)

Every request but the presigned `/_lfs/` ones needs `Authorization: Bearer <token>` (401
otherwise, as the Hub answers). Requests, LFS uploads and commits are recorded; `fail()` injects
statuses or dropped connections. Not modelled: Xet, pull requests, tags, gitignore rules.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".tar", ".tgz", ".gz", ".zst", ".zip", ".parquet", ".arrow", ".png", ".jpg",
                ".jpeg", ".webp", ".gif", ".bin", ".pt", ".safetensors", ".npy", ".npz", ".pkl")
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space", None: "model"}
_API = r"/api/(?P<t>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
_GIT = r"/(?:(?P<t>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)"
_OBJ = r"/_lfs/(?P<t>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)/(?P<oid>[0-9a-f]{64})"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a file's `oid`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class StoredFile:
    """A committed file; for LFS files git holds the pointer and storage holds `data`."""

    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        spec = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n"
        return spec.format(self.sha256, len(self.data)).encode()

    @property
    def blob_id(self) -> str:
        return git_blob_sha1(self.pointer if self.lfs else self.data)

    def entry(self, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "oid": self.blob_id, "size": len(self.data),
                               "path": path}
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": len(self.data),
                          "pointerSize": len(self.pointer)}
        return out


@dataclass
class LoggedRequest:
    method: str
    path: str  # raw URL path, no query
    status: int  # 0: the connection was dropped without an answer
    has_auth: bool  # whether an Authorization header was sent (the token is never stored)


@dataclass
class CommitRecord:
    repo_id: str
    repo_type: str
    branch: str
    oid: str
    summary: str
    parent: str
    added: list[str]
    deleted: list[str]


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    times: int | None  # None: forever
    skip: int  # matching requests let through before the fault starts
    retry_after: float | None
    drop: bool  # close the connection without an answer
    after: bool  # handle the request first (commit applied), then fail or drop the answer
    hits: int = 0  # times the fault fired


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: str = field(default_factory=_now)
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit oid
    trees: dict[str, dict[str, StoredFile]] = field(default_factory=dict)  # commit oid -> files
    objects: dict[str, bytes] = field(default_factory=dict)  # LFS storage: sha256 -> bytes
    parts: dict[tuple[str, int], bytes] = field(default_factory=dict)  # multipart uploads


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


Reply = tuple[int, dict[str, str], bytes]


def _json(obj: Any, status: int = 200, **headers: str) -> Reply:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(obj).encode()


def _tree_path(g: dict, base: str) -> str:
    """The tree URL path of `base` (for pagination links)."""
    tail = f"/{quote(base, safe='')}" if base else ""
    return f"/api/{g['t']}/{g['ns']}/{g['name']}/tree/{g['rev']}{tail}"


def _error(e: HubError) -> Reply:
    headers = {"X-Error-Message": e.message, **e.headers}
    if e.code:
        headers["X-Error-Code"] = e.code
    return _json({"error": e.message}, e.status, **headers)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                out += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return bytes(out)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        reply = self.server.hub._serve(self.command, self.path, self.headers, self._body())
        if reply is None:  # injected drop
            self.close_connection = True
            return
        status, headers, body = reply
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer


class HubServer:
    """In-memory Hub on 127.0.0.1 (random port); use as a context manager or start()/stop()."""

    def __init__(self, token: str = "hf_test_token", *, user: str = "twig-tester",
                 lfs_threshold: int = 10 * 2**20, multipart_chunk_size: int | None = None,
                 tree_page_size: int = 1000) -> None:
        self._token, self.user = token, user
        self.lfs_threshold, self.multipart_chunk_size = lfs_threshold, multipart_chunk_size
        self.tree_page_size = tree_page_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.log: list[LoggedRequest] = []
        self.lfs_puts: Counter[str] = Counter()  # sha256 -> accepted uploads of that object
        self.commits: list[CommitRecord] = []
        self.faults: list[Fault] = []
        self._secret = secrets.token_bytes(16)
        self._lock = threading.RLock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self._routes = [(m, re.compile(p + "$"), f) for m, p, f in [
            ("POST", r"/api/repos/create", self._create_repo),
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?", self._repo_info),
            ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", self._tree),
            ("POST", _API + r"/paths-info/(?P<rev>[^/]+)", self._paths_info),
            ("POST", _API + r"/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", _API + r"/commit/(?P<rev>[^/]+)", self._commit),
            ("POST", _API + r"/branch/(?P<rev>[^/]+)", self._create_branch),
            ("GET", _API + r"/xet-(?:read|write)-token(?:/.*)?", self._no_xet),
            ("POST", _GIT + r"\.git/info/lfs/objects/batch", self._lfs_batch),
            ("POST", _GIT + r"\.git/info/lfs/objects/verify", self._lfs_verify),
            ("GET", _GIT + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve),
            ("HEAD", _GIT + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve),
            ("PUT", _OBJ, self._lfs_put),
            ("POST", _OBJ, self._lfs_complete),
        ]]

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> HubServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test helpers ---------------------------------------------------------------------------
    def fail(self, method: str, path: str, status: int = 500, *, times: int | None = 1,
             skip: int = 0, retry_after: float | None = None, drop: bool = False,
             after: bool = False) -> Fault:
        """Make requests matching `method` and the regex `path` (searched in the raw URL path)
        fail with `status` (or a dropped connection) `times` times (None: every time), after
        letting `skip` matching requests through. `after=True` handles the request first."""
        fault = Fault(method.upper(), re.compile(path), status, times, skip, retry_after, drop,
                      after)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def requests(self, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        """Logged requests, filtered by method and a regex searched in the path."""
        return [r for r in self.log if (method is None or r.method == method.upper())
                and (path is None or re.search(path, r.path))]

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main",
              repo_type: str = "dataset") -> dict[str, bytes]:
        """Path -> content of every file at `revision` (a branch or a commit oid)."""
        tree = self._tree_at(self.repo(repo_id, repo_type), revision)
        return {p: f.data for p, f in tree.items()}

    def client_env(self, home: str | Path) -> dict[str, str]:
        """Environment for a subprocess (e.g. the `twig` CLI) that should upload to this server
        over LFS: endpoint, token, online, Xet off, HF_HOME under `home`."""
        return {"HF_ENDPOINT": self.url, "HF_TOKEN": self._token, "HF_HUB_OFFLINE": "0",
                "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(home)}

    def patch_client(self, monkeypatch: Any, home: str | Path) -> None:
        """Point `huggingface_hub` in this process at the server for one test. It reads its
        settings at import time, so its `constants` are patched besides the environment."""
        from huggingface_hub import constants

        for key, value in self.client_env(home).items():
            monkeypatch.setenv(key, value)
        template = self.url + "/{repo_id}/resolve/{revision}/{filename}"
        for name, value in [("ENDPOINT", self.url), ("HUGGINGFACE_CO_URL_TEMPLATE", template),
                            ("HF_URL_HOSTS", constants.HF_URL_HOSTS | {"127.0.0.1"}),
                            ("HF_HUB_OFFLINE", False),
                            ("HF_HUB_DISABLE_XET", True), ("HF_HOME", str(home)),
                            ("HF_HUB_CACHE", str(Path(home) / "hub")),
                            ("HF_TOKEN_PATH", str(Path(home) / "token"))]:
            monkeypatch.setattr(constants, name, value)

    # -- dispatch -------------------------------------------------------------------------------
    def _serve(self, method: str, raw: str, headers: Any, body: bytes) -> Reply | None:
        split = urlsplit(raw)
        path, query = split.path, {k: v[-1] for k, v in parse_qs(split.query).items()}
        auth = headers.get("Authorization")
        with self._lock:
            fault = next((f for f in self.faults if f.method == method and f.path.search(path)
                          and (f.times is None or f.hits < f.times)), None)
            if fault is not None and fault.skip > 0:
                fault.skip, fault = fault.skip - 1, None
            if fault is not None:
                fault.hits += 1
            reply = None if fault and not fault.after else self._route(method, path, query,
                                                                        auth, body)
            if fault is not None:
                extra = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
                err = HubError(fault.status, f"Injected fault {fault.status}", headers=extra)
                reply = None if fault.drop else _error(err)
            self.log.append(LoggedRequest(method, path, reply[0] if reply else 0, auth is not None))
        return reply

    def _route(self, method: str, path: str, query: dict[str, str], auth: str | None,
               body: bytes) -> Reply:
        try:
            for m, pattern, handler in self._routes:
                match = pattern.match(path)
                if m == method and match:
                    if not path.startswith("/_lfs/"):
                        self._check_auth(auth)
                    return handler(match.groupdict(), query, body)
            self._check_auth(auth)
            raise HubError(404, f"Not found: {method} {path}")
        except HubError as e:
            return _error(e)

    def _check_auth(self, auth: str | None) -> None:
        if not auth:
            raise HubError(401, "Invalid username or password.")
        if not hmac.compare_digest(auth.encode(), f"Bearer {self._token}".encode()):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _get_repo(self, g: dict[str, str]) -> Repo:
        key = (_TYPE[g.get("t")], f"{unquote(g['ns'])}/{unquote(g['name'])}")
        if key not in self.repos:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return self.repos[key]

    def _tree_at(self, repo: Repo, rev: str) -> dict[str, StoredFile]:
        oid = repo.branches.get(rev, rev)
        if oid not in repo.trees:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return repo.trees[oid]

    def _new_commit(self, repo: Repo, branch: str, tree: dict[str, StoredFile]) -> str:
        seed = f"{repo.repo_id}{branch}{len(repo.trees)}{secrets.token_hex(8)}".encode()
        oid = hashlib.sha1(seed).hexdigest()
        repo.trees[oid], repo.branches[branch] = tree, oid
        return oid

    def _sign(self, repo: Repo, oid: str, size: int) -> str:
        msg = f"{repo.repo_type}/{repo.repo_id}/{oid}/{size}".encode()
        return hmac.new(self._secret, msg, "sha256").hexdigest()

    def is_lfs(self, path: str, sample: bytes, size: int) -> bool:
        """The upload mode rule: large, binary-looking (NUL byte) or LFS-tracked suffix."""
        return size > 0 and (size > self.lfs_threshold or b"\0" in sample
                             or path.lower().endswith(LFS_SUFFIXES))

    # -- repo API -------------------------------------------------------------------------------
    def _create_repo(self, g: dict, q: dict, body: bytes) -> Reply:
        p = json.loads(body or b"{}")
        repo_type = p.get("type") or "model"
        repo_id = f"{p.get('organization') or self.user}/{p['name']}"
        url = f"{self.url}/{_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return _json({"error": f"You already created this {repo_type} repo", "url": url}, 409,
                         **{"X-Error-Message": f"You already created this {repo_type} repo"})
        private = bool(p.get("private")) or p.get("visibility") == "private"
        repo = self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private)
        self._new_commit(repo, "main", {".gitattributes": StoredFile(GITATTRIBUTES.encode(), False)})
        return _json({"url": url, "name": repo_id, "id": secrets.token_hex(12)})

    def _whoami(self, g: dict, q: dict, body: bytes) -> Reply:
        token = {"displayName": "test", "role": "write"}
        return _json({"type": "user", "name": self.user, "auth": {"accessToken": token}})

    def _validate_yaml(self, g: dict, q: dict, body: bytes) -> Reply:
        content = json.loads(body).get("content", "")
        match = re.match(r"---\n(.*?)\n---", content, re.S)
        try:
            meta = yaml.safe_load(match.group(1)) if match else {}
            if not isinstance(meta, dict | None):
                raise yaml.YAMLError("metadata must be a mapping")
        except yaml.YAMLError as e:
            return _json({"errors": [{"message": str(e)}], "warnings": []}, 400)
        return _json({"errors": [], "warnings": []})

    def _repo_info(self, g: dict, q: dict, body: bytes) -> Reply:
        repo = self._get_repo(g)
        rev = unquote(g.get("rev") or "main")
        tree = self._tree_at(repo, rev)
        blobs = q.get("blobs", "").lower() in ("1", "true")
        siblings = [{"rfilename": p} | ({"size": len(f.data), "blobId": f.blob_id} if blobs else {})
                    | ({"lfs": {"sha256": f.sha256, "size": len(f.data),
                                "pointerSize": len(f.pointer)}} if blobs and f.lfs else {})
                    for p, f in sorted(tree.items())]
        return _json({"_id": repo.repo_id, "id": repo.repo_id, "author": repo.repo_id.split("/")[0],
                      "sha": repo.branches.get(rev, rev), "private": repo.private, "gated": False,
                      "disabled": False, "createdAt": repo.created, "lastModified": _now(),
                      "tags": [], "downloads": 0, "likes": 0, "siblings": siblings})

    def _entries(self, tree: dict[str, StoredFile], paths: list[str]) -> list[dict[str, Any]]:
        dirs = {"/".join(p.split("/")[:i]) for p in tree for i in range(1, p.count("/") + 1)}
        out = []
        for p in paths:
            if p in tree:
                out.append(tree[p].entry(p))
            elif p in dirs:
                inside = sorted(f"{k}{tree[k].blob_id}" for k in tree if k.startswith(p + "/"))
                oid = hashlib.sha1("".join(inside).encode()).hexdigest()
                out.append({"type": "directory", "oid": oid, "size": 0, "path": p})
        return out

    def _tree(self, g: dict, q: dict, body: bytes) -> Reply:
        repo = self._get_repo(g)
        tree = self._tree_at(repo, unquote(g["rev"]))
        base = unquote(g.get("path") or "").strip("/")
        prefix = f"{base}/" if base else ""
        below = {p[len(prefix):] for p in tree if p.startswith(prefix)}
        if base and not below:
            raise HubError(404, f"{base} does not exist on \"{g['rev']}\"", "EntryNotFound")
        recursive = q.get("recursive", "").lower() in ("1", "true")
        names = {"/".join(p.split("/")[:i + 1]) for p in below
                 for i in range(p.count("/") + 1 if recursive else 1)}
        entries = self._entries(tree, sorted(prefix + n for n in names))
        start = int(q.get("cursor", 0))
        page, headers = entries[start:start + self.tree_page_size], {}
        if start + self.tree_page_size < len(entries):
            nxt = f"recursive={str(recursive).lower()}&cursor={start + self.tree_page_size}"
            headers["Link"] = f'<{self.url}{_tree_path(g, base)}?{nxt}>; rel="next"'
        return _json(page, **headers)

    def _paths_info(self, g: dict, q: dict, body: bytes) -> Reply:
        repo = self._get_repo(g)
        tree = self._tree_at(repo, unquote(g["rev"]))
        if body.lstrip().startswith(b"{"):
            paths = json.loads(body).get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        return _json(self._entries(tree, [p.strip("/") for p in paths]))

    def _preupload(self, g: dict, q: dict, body: bytes) -> Reply:
        repo = self._get_repo(g)
        rev = unquote(g["rev"])
        tree = self._tree_at(repo, rev)
        out = []
        for f in json.loads(body)["files"]:
            sample = base64.b64decode(f.get("sample", ""))
            mode = "lfs" if self.is_lfs(f["path"], sample, int(f["size"])) else "regular"
            item = {"path": f["path"], "uploadMode": mode, "shouldIgnore": False}
            if (old := tree.get(f["path"])) is not None:
                item["oid"] = old.sha256 if old.lfs else old.blob_id
            out.append(item)
        return _json({"files": out, "commitOid": repo.branches.get(rev, rev)})

    def _commit(self, g: dict, q: dict, body: bytes) -> Reply:
        repo = self._get_repo(g)
        branch = unquote(g["rev"])
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        if q.get("create_pr"):
            raise HubError(400, "create_pr is not supported by this test server")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line must be the commit header")
        header, head = lines[0]["value"], repo.branches[branch]
        if header.get("parentCommit") not in (None, head):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree, added, deleted = dict(repo.trees[head]), [], []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = str(value.get("path", ""))
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise HubError(400, f"Invalid path: {path!r}")
            if key == "file":
                data = base64.b64decode(value["content"])
                if self.is_lfs(path, data[:512], len(data)):
                    raise HubError(400, f"Your push was rejected because {path} is a binary or "
                                        "large file: it must be uploaded with Git LFS")
                tree[path] = StoredFile(data, False)
            elif key == "lfsFile":
                data = repo.objects.get(value.get("oid", ""))
                if data is None or value.get("size", len(data)) != len(data):
                    raise HubError(400, f"Your push was rejected because an LFS pointer ({path}) "
                                        "points to an object that was not uploaded")
                tree[path] = StoredFile(data, True)
            elif key == "deletedFile":
                if tree.pop(path, None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                for p in [p for p in tree if p.startswith(path.rstrip("/") + "/")]:
                    del tree[p]
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
            (added if key in ("file", "lfsFile") else deleted).append(path)
        oid = self._new_commit(repo, branch, tree)
        self.commits.append(CommitRecord(repo.repo_id, repo.repo_type, branch, oid,
                                         header.get("summary", ""), head, added, deleted))
        url = f"{self.url}/{_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{oid}"
        return _json({"success": True, "commitOid": oid, "commitUrl": url, "hookOutput": "",
                      "pullRequestUrl": None})

    def _create_branch(self, g: dict, q: dict, body: bytes) -> Reply:
        repo = self._get_repo(g)
        branch = unquote(g["rev"])
        if branch in repo.branches:
            raise HubError(409, "Reference already exists")
        start = json.loads(body or b"{}").get("startingPoint") or "main"
        self._tree_at(repo, start)
        repo.branches[branch] = repo.branches.get(start, start)
        return _json({})

    def _no_xet(self, g: dict, q: dict, body: bytes) -> Reply:
        self._get_repo(g)
        raise HubError(404, "Xet storage is not enabled on this server")

    # -- Git LFS --------------------------------------------------------------------------------
    def _lfs_batch(self, g: dict, q: dict, body: bytes) -> Reply:
        repo = self._get_repo(g)
        p = json.loads(body)
        if p.get("operation") != "upload":
            raise HubError(400, "Only the upload operation is supported")
        verify = f"{self.url}/{_PREFIX[repo.repo_type]}{repo.repo_id}.git/info/lfs/objects/verify"
        out = []
        for obj in p.get("objects", []):
            oid, size = obj.get("oid", ""), obj.get("size")
            item: dict[str, Any] = {"oid": oid, "size": size}
            if not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int) or size < 0:
                item["error"] = {"code": 422, "message": "Invalid object oid or size"}
            elif oid not in repo.objects:
                href = (f"{self.url}/_lfs/{repo.repo_type}s/{repo.repo_id}/{oid}"
                        f"?size={size}&sig={self._sign(repo, oid, size)}")
                upload: dict[str, Any] = {"href": href}
                chunk = self.multipart_chunk_size
                if chunk and size > chunk:
                    parts = {str(i): f"{href}&part={i}" for i in range(1, math.ceil(size / chunk) + 1)}
                    upload["header"] = {"chunk_size": str(chunk), **parts}
                item["authenticated"] = True
                item["actions"] = {"upload": upload, "verify": {"href": verify}}
            out.append(item)
        transfer = "multipart" if self.multipart_chunk_size else "basic"
        payload = json.dumps({"transfer": transfer, "objects": out, "hash_algo": "sha256"})
        return 200, {"Content-Type": "application/vnd.git-lfs+json"}, payload.encode()

    def _lfs_verify(self, g: dict, q: dict, body: bytes) -> Reply:
        repo = self._get_repo(g)
        p = json.loads(body)
        data = repo.objects.get(p.get("oid", ""))
        if data is None or len(data) != p.get("size"):
            raise HubError(404, "Object not found or size mismatch")
        return _json({"success": True})

    def _object_target(self, g: dict, q: dict) -> tuple[Repo, str, int]:
        repo, oid = self._get_repo(g), g["oid"]
        size = int(q.get("size", -1))
        if not hmac.compare_digest(q.get("sig", ""), self._sign(repo, oid, size)):
            raise HubError(403, "Request has expired or signature does not match")
        return repo, oid, size

    def _store(self, repo: Repo, oid: str, size: int, data: bytes) -> None:
        if len(data) != size or hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match oid {oid} / size {size}")
        repo.objects[oid] = data
        self.lfs_puts[oid] += 1

    def _lfs_put(self, g: dict, q: dict, body: bytes) -> Reply:
        repo, oid, size = self._object_target(g, q)
        if "part" not in q:
            self._store(repo, oid, size, body)
            return 200, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}, b""
        repo.parts[(oid, int(q["part"]))] = body
        return 200, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}, b""

    def _lfs_complete(self, g: dict, q: dict, body: bytes) -> Reply:
        repo, oid, size = self._object_target(g, q)
        parts = sorted(json.loads(body).get("parts", []), key=lambda x: x["partNumber"])
        chunks = [repo.parts.get((oid, x["partNumber"])) for x in parts]
        if any(c is None or f'"{hashlib.md5(c).hexdigest()}"' != x["etag"].replace("W/", "")
               for c, x in zip(chunks, parts, strict=True)):
            raise HubError(400, "Missing part or etag mismatch")
        self._store(repo, oid, size, b"".join(c for c in chunks if c is not None))
        for x in parts:
            repo.parts.pop((oid, x["partNumber"]), None)
        return _json({"success": True})

    def _resolve(self, g: dict, q: dict, body: bytes) -> Reply:
        repo = self._get_repo(g)
        rev, path = unquote(g["rev"]), unquote(g["path"])
        f = self._tree_at(repo, rev).get(path)
        if f is None:
            raise HubError(404, "Entry not found", "EntryNotFound")
        etag = f.sha256 if f.lfs else f.blob_id
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": repo.branches.get(rev, rev),
                   "Content-Type": "application/octet-stream"}
        if f.lfs:
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(f.data))}
        return 200, headers, f.data

