"""The Hub test double (tests/sharding/hub_server.py) driven by the real `huggingface_hub` client.

The Hub cannot be reached from tests, so `HubServer` is a real HTTP server on 127.0.0.1 that
speaks its upload protocol; these tests check that huggingface_hub 2.4's own HfApi can create
repos, upload over Git LFS, list, download, and that errors and injected faults reach the client
the way the library handles them (commits are not retried, LFS transfers are).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx2 as httpx  # huggingface_hub 2.x's HTTP client
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.sharding.hub_server import HubServer, git_blob_sha1

TOKEN = "hf_test_token_0123456789"
REPO = "twig-tester/twig-synthetic"


@pytest.fixture
def server(monkeypatch, tmp_path):
    with HubServer(token=TOKEN) as hub:
        hub.patch_client(monkeypatch, tmp_path / "hf")
        yield hub


@pytest.fixture
def api(server):
    api = HfApi(endpoint=server.url, token=TOKEN)
    api.create_repo(REPO, repo_type="dataset")
    return api


def add(path: str, data: bytes) -> CommitOperationAdd:
    return CommitOperationAdd(path_in_repo=path, path_or_fileobj=data)


def commit(api: HfApi, *ops: CommitOperationAdd, **kw):
    return api.create_commit(REPO, repo_type="dataset", operations=list(ops),
                             commit_message="upload", **kw)


def test_create_repo_is_idempotent_with_exist_ok_and_starts_with_gitattributes(server):
    api = HfApi(endpoint=server.url, token=TOKEN)
    url = api.create_repo(REPO, repo_type="dataset")
    assert url == f"{server.url}/datasets/{REPO}" and url.repo_id == REPO
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO, repo_type="dataset")
    assert err.value.response.status_code == 409
    assert api.create_repo(REPO, repo_type="dataset", exist_ok=True).repo_id == REPO
    info = api.dataset_info(REPO)
    assert [s.rfilename for s in info.siblings] == [".gitattributes"] and len(info.sha) == 40
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("twig-tester/missing")


def test_regular_and_lfs_files_round_trip(server, api, tmp_path):
    text, blob = b"# card\nhello\n", os.urandom(300_000)
    info = commit(api, add("notes.txt", text), add("shards/train-000000.tar", blob))
    assert info.oid == server.commits[-1].oid == api.dataset_info(REPO).sha
    assert server.commits[-1].added == ["notes.txt", "shards/train-000000.tar"]

    tree = {e.path: e for e in api.list_repo_tree(REPO, repo_type="dataset", recursive=True)}
    assert set(tree) == {".gitattributes", "notes.txt", "shards", "shards/train-000000.tar"}
    assert tree["notes.txt"].size == len(text) and tree["notes.txt"].lfs is None
    assert tree["notes.txt"].blob_id == git_blob_sha1(text)
    lfs = tree["shards/train-000000.tar"].lfs
    assert tree["shards/train-000000.tar"].size == len(blob)
    assert lfs.sha256 == hashlib.sha256(blob).hexdigest() and lfs.size == len(blob)
    assert server.lfs_puts == {lfs.sha256: 1}  # the text file went inline in the commit

    for name, data in [("notes.txt", text), ("shards/train-000000.tar", blob)]:
        path = hf_hub_download(REPO, name, repo_type="dataset", endpoint=server.url,
                               token=TOKEN, cache_dir=tmp_path / "dl")
        assert Path(path).read_bytes() == data
    assert server.files(REPO)["shards/train-000000.tar"] == blob


def test_known_lfs_objects_are_not_sent_again(server, api):
    blob = os.urandom(200_000)
    commit(api, add("a/x.tar", blob))
    commit(api, add("b/x.tar", blob))  # same bytes, new path: batch says "already stored"
    before = len(server.log)
    commit(api, add("a/x.tar", blob))  # unchanged file: the client skips the commit altogether
    oid = hashlib.sha256(blob).hexdigest()
    assert server.lfs_puts == {oid: 1} and len(server.requests("PUT")) == 1
    assert [c.added for c in server.commits] == [["a/x.tar"], ["b/x.tar"]]
    assert not any(r.path.endswith("/commit/main") for r in server.log[before:])


def test_bad_token_is_a_401_that_does_not_echo_the_token(server):
    secret = "hf_wrong_secret_do_not_print"
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=server.url, token=secret).create_repo(REPO, repo_type="dataset")
    assert err.value.response.status_code == 401
    assert "Invalid credentials" in str(err.value) and secret not in str(err.value)
    r = httpx.post(f"{server.url}/api/repos/create", json={"name": "x", "type": "dataset"})
    assert r.status_code == 401 and server.log[-1].has_auth is False
    assert secret not in repr(server.log) and TOKEN not in repr(server.log)
    assert not server.repos


def test_commit_500_is_raised_not_retried_and_a_rerun_resumes(server, api):
    blob = os.urandom(100_000)
    server.fail("POST", r"/commit/", status=500, times=None)  # every commit fails
    with pytest.raises(HfHubHTTPError) as err:
        commit(api, add("x.tar", blob), add("y.txt", b"y"))
    assert err.value.response.status_code == 500
    assert [r.status for r in server.requests("POST", r"/commit/")] == [500]
    assert server.lfs_puts[hashlib.sha256(blob).hexdigest()] == 1  # the object did arrive
    server.clear_faults()
    commit(api, add("x.tar", blob), add("y.txt", b"y"))
    assert len(server.requests("PUT")) == 1  # the re-run found the object stored
    assert server.files(REPO)["x.tar"] == blob


def test_transfer_errors_and_dropped_connections_are_retried(server, api):
    server.fail("PUT", r"^/_lfs/", status=503, retry_after=0)
    server.fail("POST", r"/preupload/", drop=True)
    blob = os.urandom(50_000)
    commit(api, add("x.tar", blob))
    assert [r.status for r in server.requests("PUT")] == [503, 200]
    assert [r.status for r in server.requests("POST", "/preupload/")] == [0, 200]
    assert server.files(REPO)["x.tar"] == blob


def test_lost_commit_response_still_commits(server, api):
    server.fail("POST", r"/commit/", status=502, after=True)
    with pytest.raises(HfHubHTTPError):
        commit(api, add("y.txt", b"y"))
    assert server.files(REPO)["y.txt"] == b"y" and len(server.commits) == 1


def test_missing_branch_is_refused_until_created(server, api):
    with pytest.raises(RevisionNotFoundError):
        commit(api, add("y.txt", b"y"), revision="v1")
    api.create_branch(REPO, repo_type="dataset", branch="v1")
    api.create_branch(REPO, repo_type="dataset", branch="v1", exist_ok=True)
    commit(api, add("y.txt", b"y"), revision="v1")
    assert "y.txt" in server.files(REPO, "v1") and "y.txt" not in server.files(REPO, "main")


def test_xet_enabled_client_fails_fast_instead_of_falling_back(server, api, monkeypatch):
    pytest.importorskip("hf_xet")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    with pytest.raises(Exception, match="404"):
        commit(api, add("x.tar", os.urandom(1000)))
    assert server.requests("GET", "/xet-write-token/")[0].status == 404
    assert not server.commits and not server.lfs_puts


def test_tree_pages_paths_info_multipart_and_yaml_check(monkeypatch, tmp_path):
    with HubServer(token=TOKEN, tree_page_size=2, multipart_chunk_size=64 * 1024) as hub:
        hub.patch_client(monkeypatch, tmp_path / "hf")
        api = HfApi(endpoint=hub.url, token=TOKEN)
        api.create_repo(REPO, repo_type="dataset")
        blob = os.urandom(200_000)  # 4 parts of 64 KiB
        ops = [add(f"d/{i}.txt", b"%d" % i) for i in range(4)] + [add("d/big.tar", blob)]
        commit(api, *ops)
        parts = hub.requests("PUT", "^/_lfs/")
        assert len(parts) == 4 and hub.files(REPO)["d/big.tar"] == blob
        listed = [e.path for e in api.list_repo_tree(REPO, repo_type="dataset", recursive=True)]
        assert len(listed) == 7 and len(hub.requests("GET", "/tree/")) == 4
        info = api.get_paths_info(REPO, ["d", "d/big.tar", "nope"], repo_type="dataset")
        assert [type(e).__name__ for e in info] == ["RepoFolder", "RepoFile"]
        with pytest.raises(ValueError, match="Invalid metadata"):
            commit(api, add("README.md", b"---\nlicense: [mit\n---\n"))


def test_server_checks_object_bytes_and_commit_pointers(server, api):
    data = b"\0" * 1000
    oid = hashlib.sha256(data).hexdigest()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    batch = httpx.post(f"{server.url}/datasets/{REPO}.git/info/lfs/objects/batch", headers=auth,
                       json={"operation": "upload", "objects": [{"oid": oid, "size": 1000}]})
    href = batch.json()["objects"][0]["actions"]["upload"]["href"]
    assert httpx.put(href, content=b"\1" * 1000).status_code == 400
    assert httpx.put(href.split("&sig=")[0] + "&sig=0", content=data).status_code == 403
    line = {"key": "lfsFile", "value": {"path": "a.bin", "algo": "sha256", "oid": oid}}
    ndjson = "\n".join(json.dumps(x) for x in [{"key": "header", "value": {"summary": "s"}}, line])
    url = f"{server.url}/api/datasets/{REPO}/commit/main"
    assert httpx.post(url, headers=auth, content=ndjson).status_code == 400  # never uploaded
    assert httpx.put(href, content=data).status_code == 200
    assert httpx.post(url, headers=auth, content=ndjson).status_code == 200
    assert server.files(REPO)["a.bin"] == data
