"""`twig upload` against `HubServer`: a real HTTP server on 127.0.0.1 speaking the Hugging Face Hub's
upload protocol (repo create, preupload, LFS batch, presigned PUT, commit), the stand-in for the Hub
that cannot be reached from here. The client is the real huggingface_hub."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.driver import build
from sharding.upload import Uploader, UploadError, commit_batches, upload_plan
from tests.conftest import REPO, TWIG
from tests.sharding.hub_server import HubServer

TOKEN = "hf_uploadtest_7c1e9b2d4a6f8e0c3b5d"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("upload") / "ds"
    build(load_config(None, ["source.count=48", "shard.max_records=12", "run.progress=false",
                             f"run.out={out}"]))
    return out


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with HubServer(token=TOKEN, lfs_threshold=4096) as server:
        server.patch_client(monkeypatch, tmp_path / "hf")
        yield server


def manifest_files(root: Path) -> list[str]:
    m = json.loads((root / "manifest.json").read_text())
    return [s["path"] for s in m["shards"]] + [f["path"] for f in m["files"]]


def uploader(root: Path, hub: HubServer, **kw) -> Uploader:
    kw.setdefault("sleep", lambda s: None)
    return Uploader(root, "lab/twig-test", endpoint=hub.url, **kw)


def test_cli_uploads_every_manifest_file_and_the_card_intact(dataset, tmp_path):
    with HubServer(token=TOKEN, lfs_threshold=4096) as hub:
        env = {**os.environ, **hub.client_env(tmp_path / "hf")}
        env.pop("HF_HUB_DISABLE_XET")  # auto: the uploader finds this endpoint has no Xet, uses LFS
        r = subprocess.run([*TWIG, "upload", str(dataset), "--repo", "lab/twig-test"], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        remote = hub.files("lab/twig-test")
    expected = manifest_files(dataset) + ["README.md", "manifest.json"]
    assert sorted(set(remote) - {".gitattributes"}) == sorted(expected)
    for rel in expected:
        assert remote[rel] == (dataset / rel).read_bytes(), rel
    assert "via lfs" in r.stdout and "0 already there" in r.stdout
    assert TOKEN not in r.stdout + r.stderr and TOKEN[-8:] not in r.stdout + r.stderr
    assert not any(TOKEN.encode() in p.read_bytes() for p in dataset.rglob("*") if p.is_file())
    # nothing but the manifest's files and the card: no progress markers, no caches
    assert not any(p.startswith(".") and p != ".gitattributes" for p in remote)
    # the manifest lands in the last commit, so a repo holding it is complete
    assert hub.commits[-1].added == ["README.md", "manifest.json"] or \
        sorted(hub.commits[-1].added) == ["README.md", "manifest.json"]
    # every large file went through LFS exactly once
    shas = {hashlib.sha256((dataset / p).read_bytes()).hexdigest() for p in expected
            if (dataset / p).stat().st_size > 4096}
    assert set(hub.lfs_puts) == shas and set(hub.lfs_puts.values()) == {1}


def test_an_interrupted_upload_resumes_without_sending_finished_files_again(dataset, hub):
    # the first commit lands, then every commit fails: the upload stops part-way
    hub.fail("POST", r"/commit/", 500, times=None, skip=1)
    first = uploader(dataset, hub, max_commit_files=3, retries=2)
    with pytest.raises(UploadError) as e:
        first.run()
    assert "500" in str(e.value) and TOKEN not in str(e.value)
    landed = set(hub.files("lab/twig-test")) - {".gitattributes"}
    assert len(landed) == 3 and "manifest.json" not in landed
    puts_before = dict(hub.lfs_puts)
    hub.clear_faults()

    report = uploader(dataset, hub, max_commit_files=3).run()
    assert sorted(report.skipped) == sorted(landed)  # committed files: not even offered again
    assert not set(report.sent) & landed
    # objects the failed run had already sent (committed or not) were never PUT again
    assert all(hub.lfs_puts[oid] == n for oid, n in puts_before.items())
    assert set(hub.lfs_puts.values()) == {1}
    remote = hub.files("lab/twig-test")
    for rel in manifest_files(dataset) + ["README.md", "manifest.json"]:
        assert remote[rel] == (dataset / rel).read_bytes(), rel

    again = uploader(dataset, hub).run()  # a finished upload: nothing to send, no commit
    assert again.sent == [] and again.commits == 0
    assert len(again.skipped) == len(again.files)


def test_transient_errors_are_retried_honouring_retry_after(dataset, hub):
    waits: list[float] = []
    hub.fail("POST", r"/commit/", 429, times=2, retry_after=7)
    hub.fail("POST", r"/preupload/", 503, times=1, drop=True)
    report = uploader(dataset, hub, sleep=waits.append).run()
    assert report.retries == 2 and waits == [7.0, 7.0]
    assert set(manifest_files(dataset)) <= set(hub.files("lab/twig-test"))


def test_a_permanent_error_stops_with_one_line_and_no_token(dataset, hub):
    bad = Uploader(dataset, "lab/twig-test", endpoint=hub.url, token="hf_wrong_token_abcdef123456",
                   sleep=lambda s: None)
    with pytest.raises(UploadError) as e:
        bad.run()
    msg = str(e.value)
    assert "401" in msg and "\n" not in msg and "hf_wrong_token_abcdef123456" not in msg
    assert hub.commits == [] and not hub.lfs_puts


def test_revision_and_private(dataset, hub):
    uploader(dataset, hub, revision="v1", private=True).run()
    repo = hub.repo("lab/twig-test")
    assert repo.private
    assert "manifest.json" in hub.files("lab/twig-test", revision="v1")
    assert "manifest.json" not in hub.files("lab/twig-test", revision="main")


def test_dry_run_lists_files_and_size_and_sends_nothing(dataset, tmp_path):
    with HubServer(token=TOKEN) as hub:
        env = {**os.environ, **hub.client_env(tmp_path / "hf")}
        r = subprocess.run([*TWIG, "upload", str(dataset), "--repo", "lab/x", "--dry-run"], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert hub.log == []
    total = sum((dataset / p).stat().st_size for p in manifest_files(dataset)) + \
        (dataset / "README.md").stat().st_size + (dataset / "manifest.json").stat().st_size
    assert f"would upload {len(manifest_files(dataset)) + 2} files" in r.stdout
    for rel in manifest_files(dataset):
        assert rel in r.stdout
    assert f"{total / 1e6:.1f} MB" in r.stdout


def test_a_damaged_or_unfinished_dataset_is_refused_before_anything_is_sent(dataset, tmp_path):
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    shard = copy / manifest_files(copy)[0]
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF  # one flipped byte inside the first member
    shard.write_bytes(bytes(data))
    with pytest.raises(UploadError, match="does not match its manifest"):
        upload_plan(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(UploadError, match="no manifest.json"):
        upload_plan(copy)
    r = subprocess.run([*TWIG, "upload", str(copy), "--repo", "lab/x"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no manifest.json" in r.stderr


def test_a_manifest_pointing_outside_the_folder_is_refused(dataset, tmp_path):
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["files"].append({"path": "../../etc/passwd", "bytes": 1, "sha256": "0" * 64})
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UploadError, match="not a path inside the dataset folder"):
        upload_plan(copy)


def test_no_token_is_a_clear_error(dataset, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    r = subprocess.run([*TWIG, "upload", str(dataset), "--repo", "lab/x"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no Hugging Face token" in r.stderr and "Traceback" not in r.stderr


def test_commits_are_bounded_and_the_manifest_goes_last(dataset):
    files = upload_plan(dataset)
    batches = commit_batches(files, max_bytes=1_000_000, max_files=4)
    assert [f.path for f in batches[-1]] == ["README.md", "manifest.json"]
    assert all(len(b) <= 4 for b in batches)
    assert all(sum(f.bytes for f in b) <= 1_000_000 or len(b) == 1 for b in batches[:-1])
    assert [f.path for b in batches for f in b] == [f.path for f in files]


def test_a_file_counts_as_uploaded_only_when_the_repo_holds_the_same_content(tmp_path):
    from sharding.upload import UploadFile, git_blob_id

    big = tmp_path / "big.tar"
    big.write_bytes(b"x" * 11_000_000)
    f = UploadFile("shards/big.tar", big, big.stat().st_size, hashlib.sha256(big.read_bytes()).hexdigest())
    assert not Uploader._same(None, f)  # not on the Hub: upload it, whatever its size
    assert Uploader._same(f.sha256, f)  # stored through LFS/Xet with our sha256
    assert Uploader._same(git_blob_id(big), f)  # stored in git
    assert not Uploader._same("0" * 64, f) and not Uploader._same("0" * 40, f)


def test_uploading_a_new_build_over_an_older_one_removes_its_stale_files(dataset, hub, tmp_path):
    smaller = tmp_path / "small"
    build(load_config(None, ["source.count=20", "shard.max_records=12", "run.progress=false",
                             f"run.out={smaller}"]))
    uploader(dataset, hub).run()
    hub.files("lab/twig-test")  # the older, bigger build is there
    api_other = "notes/keep-me.md"  # a file the user added by hand stays
    from huggingface_hub import HfApi

    HfApi(endpoint=hub.url, token=TOKEN).upload_file(path_or_fileobj=b"mine", path_in_repo=api_other,
                                                     repo_id="lab/twig-test", repo_type="dataset")
    report = uploader(smaller, hub, max_commit_files=2).run()
    remote = hub.files("lab/twig-test")
    expected = set(manifest_files(smaller)) | {"README.md", "manifest.json"}
    assert {p for p in remote if p.startswith(("shards/", "rejects/", "card/"))} == \
        {p for p in expected if p.startswith(("shards/", "rejects/", "card/"))}
    assert remote[api_other] == b"mine" and api_other not in report.deleted
    for rel in expected:
        assert remote[rel] == (smaller / rel).read_bytes(), rel
    # while the update was under way the old manifest was gone (first commit removed it)
    first = [c for c in hub.commits if "manifest.json" in c.deleted]
    assert first and first[0] is not hub.commits[-1]


def test_private_is_refused_for_an_existing_public_repo(dataset, hub):
    from huggingface_hub import HfApi

    HfApi(endpoint=hub.url, token=TOKEN).create_repo("lab/twig-test", repo_type="dataset")
    with pytest.raises(UploadError, match="is public, but --private was given"):
        uploader(dataset, hub, private=True).run()
    assert hub.commits == [] and not hub.lfs_puts


def test_offline_mode_is_a_clear_error_not_a_retry_loop(dataset, hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    waits: list[float] = []
    with pytest.raises(UploadError, match="HF_HUB_OFFLINE"):
        uploader(dataset, hub, sleep=waits.append).run()
    assert waits == [] and hub.log == []


def test_an_object_store_that_keeps_failing_is_retried_then_reported_with_its_cause(dataset, hub,
                                                                                    monkeypatch):
    import huggingface_hub.utils._http as client_http

    monkeypatch.setattr(client_http.time, "sleep", lambda s: None)  # the client's own backoff
    hub.fail("PUT", r"^/_lfs/", 503, times=None, retry_after=0)
    waits: list[float] = []
    with pytest.raises(UploadError) as e:
        uploader(dataset, hub, retries=2, sleep=waits.append).run()
    assert len(waits) == 2  # our retries, on top of the client's own for the transfer
    assert "503" in str(e.value) and "\n" not in str(e.value) and TOKEN not in str(e.value)
    assert hub.commits == []
