"""The fake hub must behave like the real one for the real `huggingface_hub` client, and faults must do what they say.

Everything runs against real sockets on 127.0.0.1: no mocks.
"""

from __future__ import annotations

import ast
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from urllib.parse import parse_qs, urlsplit
from collections.abc import Iterator
from pathlib import Path

# Read by huggingface_hub at import time, hence before the imports below.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest
import requests
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakehub import DEFAULT_GITATTRIBUTES, FakeHub, commit_sha, git_blob_sha1, lfs_pointer

FAKEHUB = Path(__file__).with_name("fakehub.py")
REPO = "org/model"
CONFIG = b'{"hidden_size": 384}'
POOLING = b'{"pooling_mode_mean_tokens": true}'
WEIGHTS = os.urandom(50_000)  # LFS: the default .gitattributes says *.safetensors
TOKENIZER = os.urandom(300_000)  # large, and still a plain git file: *.json is not LFS


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Downloaded files, without huggingface_hub's own bookkeeping under .cache/."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and ".cache" not in p.relative_to(root).parts}


_raw_conns: list[http.client.HTTPConnection] = []


def raw(hub: FakeHub, method: str, path: str, headers: dict[str, str] | None = None,
        timeout: float = 5, follow: bool = False) -> http.client.HTTPResponse:
    """One request with http.client, which exposes exactly what arrived (closed after the test).

    ``follow``: after a redirect to the CDN, the CDN's response (the token is not sent there)."""
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=timeout)
    _raw_conns.append(conn)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    if follow and resp.status in (302, 307):
        resp.read()
        target = urlsplit(resp.getheader("Location", ""))
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=timeout)
        _raw_conns.append(conn)
        conn.request(method, f"{target.path}?{target.query}",
                     headers={k: v for k, v in (headers or {}).items() if k.lower() != "authorization"})
        resp = conn.getresponse()
    return resp


@pytest.fixture(autouse=True)
def _close_raw_connections() -> Iterator[None]:
    yield
    while _raw_conns:
        _raw_conns.pop().close()


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(os.urandom(1_500_000))
    return path


@pytest.fixture
def hub(big_file: Path) -> Iterator[FakeHub]:
    with FakeHub() as hub:
        hub.commit = hub.add_repo(REPO, {  # type: ignore[attr-defined]
            "config.json": CONFIG,
            "1_Pooling/config.json": POOLING,
            "model.safetensors": WEIGHTS,
            "pytorch_model.bin": big_file,
        })
        yield hub


def expected_files(big_file: Path) -> dict[str, bytes]:
    """What a snapshot of the hub fixture's repo holds: its files and the .gitattributes the hub committed."""
    return {".gitattributes": DEFAULT_GITATTRIBUTES, "config.json": CONFIG, "1_Pooling/config.json": POOLING,
            "model.safetensors": WEIGHTS, "pytorch_model.bin": big_file.read_bytes()}


# -- the real client against the fake ----------------------------------------------------------------------


def test_snapshot_download_returns_the_right_bytes(hub: FakeHub, big_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = snapshot_download(REPO, revision="main", local_dir=out, endpoint=hub.url, token=False)
    assert Path(result).resolve() == out.resolve()
    assert tree_bytes(out) == expected_files(big_file)
    assert hub.body_bytes() == sum(len(b) for b in expected_files(big_file).values())
    assert hub.body_bytes("model.safetensors") == len(WEIGHTS)
    paths = [(r.method, r.path) for r in hub.requests]
    assert ("GET", f"/api/models/{REPO}/revision/main") in paths
    assert ("GET", f"/api/models/{REPO}/tree/{hub.commit}") in paths  # type: ignore[attr-defined]
    # LFS files came from the CDN, after a 302; the rest from the hub itself.
    content = {r.path.rsplit("/", 1)[-1]: r.server for r in hub.requests if r.method == "GET" and r.status == 200
               and r.kind != "api"}
    assert content == {".gitattributes": "hub", "config.json": "hub", "model.safetensors": "cdn",
                       "pytorch_model.bin": "cdn"}
    # Parallel downloads over keep-alive: fewer connections than requests.
    assert len({r.conn for r in hub.requests}) < len(hub.requests)


def test_branches_tags_and_old_commits(hub: FakeHub, tmp_path: Path) -> None:
    first = hub.commit  # type: ignore[attr-defined]
    hub.add_tag(REPO, "v1", first)
    second = hub.add_repo(REPO, {"config.json": b'{"v": 2}', "model.safetensors": b"new weights"})
    third = hub.add_repo(REPO, {"config.json": b'{"v": 2}', "model.safetensors": b"new weights"})
    assert len({first, second, third}) == 3  # re-adding the same files is still a new commit

    def fetch(revision: str) -> dict[str, bytes]:
        out = tmp_path / revision
        snapshot_download(REPO, revision=revision, local_dir=out, endpoint=hub.url, token=False)
        return tree_bytes(out)

    assert fetch("main") == {".gitattributes": DEFAULT_GITATTRIBUTES, "config.json": b'{"v": 2}',
                             "model.safetensors": b"new weights"}
    assert fetch("v1")["model.safetensors"] == WEIGHTS
    hub.clear_log()
    assert fetch(first)["config.json"] == CONFIG
    assert not any("/revision/" in r.path for r in hub.requests)  # a commit sha needs no resolution
    api = HfApi(endpoint=hub.url, token=False)
    assert api.model_info(REPO).sha == third
    assert api.model_info(REPO, revision="v1").sha == first
    refs = api.list_repo_refs(REPO)
    assert {(b.name, b.target_commit) for b in refs.branches} == {("main", third)}
    assert {(t.name, t.target_commit) for t in refs.tags} == {("v1", first)}


def test_hf_hub_download_etags_name_the_cache_blobs(hub: FakeHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = hf_hub_download(REPO, "config.json", cache_dir=cache, endpoint=hub.url, token=False)
    weights = hf_hub_download(REPO, "model.safetensors", revision="main", cache_dir=cache, endpoint=hub.url,
                              token=False)
    nested = hf_hub_download(REPO, "1_Pooling/config.json", local_dir=tmp_path / "ld", endpoint=hub.url,
                             token=False)
    assert Path(config).read_bytes() == CONFIG
    assert Path(weights).read_bytes() == WEIGHTS
    assert Path(nested).read_bytes() == POOLING
    # The client names blobs by ETag: git blob sha1 for small files, sha256 for LFS files.
    assert Path(config).resolve().name == git_blob_sha1(CONFIG)
    assert Path(weights).resolve().name == sha256(WEIGHTS)
    storage = cache / "models--org--model"
    assert (storage / "refs" / "main").read_text() == hub.commit  # type: ignore[attr-defined]


def test_resolve_headers(hub: FakeHub) -> None:
    resp = raw(hub, "HEAD", f"/{REPO}/resolve/main/config.json", {"Accept-Encoding": "identity"})
    resp.read()
    assert resp.status == 200 and resp.getheader("ETag") == f'"{git_blob_sha1(CONFIG)}"'
    assert resp.getheader("X-Repo-Commit") == hub.commit  # type: ignore[attr-defined]
    assert resp.getheader("Accept-Ranges") == "bytes" and resp.getheader("Content-Encoding") is None
    assert resp.getheader("Location") is None and resp.getheader("X-Linked-Etag") is None

    # An LFS file: a 302 to a signed, expiring CDN URL, the file's metadata on the redirect itself.
    resp = raw(hub, "HEAD", f"/{REPO}/resolve/main/model.safetensors", {"Accept-Encoding": "identity"})
    resp.read()
    assert resp.status == 302
    assert resp.getheader("X-Linked-Etag") == f'"{sha256(WEIGHTS)}"'
    assert resp.getheader("X-Linked-Size") == str(len(WEIGHTS))
    assert resp.getheader("ETag") == f'"{git_blob_sha1(lfs_pointer(sha256(WEIGHTS), len(WEIGHTS)))}"'
    assert resp.getheader("X-Repo-Commit") == hub.commit  # type: ignore[attr-defined]
    assert resp.getheader("X-Xet-Hash") is None  # not Xet-backed: the client must not try the Xet protocol
    location = urlsplit(resp.getheader("Location", ""))
    assert f"{location.scheme}://{location.netloc}" == hub.cdn != hub.url
    assert location.path == f"/{REPO}/resolve/{hub.commit}/model.safetensors"  # type: ignore[attr-defined]
    query = parse_qs(location.query)
    assert float(query["Expires"][0]) > time.time() + 3000 and len(query["Signature"][0]) == 64


def test_xet_backed_files_carry_a_xet_hash_and_the_real_client_still_gets_them(tmp_path: Path) -> None:
    with FakeHub() as hub:
        hub.add_repo(REPO, {"model.safetensors": WEIGHTS, "other.safetensors": CONFIG, "config.json": CONFIG},
                     xet=["model.safetensors", "config.json"])  # config.json is no LFS file: never Xet
        heads = {name: raw(hub, "HEAD", f"/{REPO}/resolve/main/{name}") for name in
                 ("model.safetensors", "other.safetensors", "config.json")}
        xet = heads["model.safetensors"].getheader("X-Xet-Hash") or ""
        assert len(xet) == 64 and xet != sha256(WEIGHTS) and heads["model.safetensors"].status == 302
        assert heads["other.safetensors"].getheader("X-Xet-Hash") is None
        assert heads["config.json"].getheader("X-Xet-Hash") is None
        tree = {e.path: e for e in HfApi(endpoint=hub.url, token=False).list_repo_tree(REPO)}
        assert tree["model.safetensors"].xet_hash == xet  # type: ignore[union-attr]
        # Without a Xet token route the client falls back to plain HTTP through the CDN.
        path = hf_hub_download(REPO, "model.safetensors", cache_dir=tmp_path, endpoint=hub.url, token=False)
        assert Path(path).read_bytes() == WEIGHTS


def test_model_info_and_tree(hub: FakeHub, big_file: Path) -> None:
    api = HfApi(endpoint=hub.url, token=False)
    info = api.model_info(REPO, files_metadata=True)
    assert info.id == REPO and info.sha == hub.commit  # type: ignore[attr-defined]
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert set(siblings) == set(expected_files(big_file))
    assert siblings["config.json"].size == len(CONFIG) and siblings["config.json"].lfs is None
    assert siblings["config.json"].blob_id == git_blob_sha1(CONFIG)
    lfs = siblings["model.safetensors"].lfs
    assert lfs is not None and lfs.sha256 == sha256(WEIGHTS) and lfs.size == len(WEIGHTS)
    assert siblings["pytorch_model.bin"].lfs.sha256 == sha256(big_file.read_bytes())  # type: ignore[union-attr]
    assert all(s.size is None for s in api.model_info(REPO).siblings or [])  # no blobs=true, no sizes

    tree = {e.path: e for e in api.list_repo_tree(REPO, recursive=True)}
    assert set(tree) == {"1_Pooling", *expected_files(big_file)}
    assert tree[".gitattributes"].lfs is None  # type: ignore[union-attr]
    assert not hasattr(tree["1_Pooling"], "size")  # a RepoFolder
    assert tree["1_Pooling/config.json"].blob_id == git_blob_sha1(POOLING)  # type: ignore[union-attr]
    assert tree["model.safetensors"].lfs.sha256 == sha256(WEIGHTS)  # type: ignore[union-attr]
    top = [e.path for e in api.list_repo_tree(REPO)]
    assert top == [".gitattributes", "1_Pooling", "config.json", "model.safetensors", "pytorch_model.bin"]
    assert [e.path for e in api.list_repo_tree(REPO, path_in_repo="1_Pooling")] == ["1_Pooling/config.json"]
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree(REPO, path_in_repo="nope"))

    infos = api.get_paths_info(REPO, ["config.json", "1_Pooling", "missing"], revision=hub.commit)  # type: ignore
    assert sorted(i.path for i in infos) == ["1_Pooling", "config.json"]


def test_tree_paging_follows_link_headers(big_file: Path) -> None:
    with FakeHub(tree_page_size=2) as hub:
        hub.add_repo(REPO, expected_files(big_file))
        assert len(list(HfApi(endpoint=hub.url, token=False).list_repo_tree(REPO, recursive=True))) == 6
        assert sum("/tree/" in r.path for r in hub.requests) == 3


def test_lfs_follows_the_repos_gitattributes_not_size_or_name(tmp_path: Path) -> None:
    attributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\nweights/** filter=lfs\nweights/keep.txt -filter\n"
    with FakeHub() as hub:
        hub.add_repo(REPO, {".gitattributes": attributes, "model.safetensors": CONFIG, "tokenizer.json": TOKENIZER,
                            "weights/a.txt": CONFIG, "weights/keep.txt": POOLING, "sub/w.safetensors": CONFIG})
        entries = {e.path: e for e in HfApi(endpoint=hub.url, token=False).list_repo_tree(REPO, recursive=True)
                   if hasattr(e, "lfs")}
        assert {p for p, e in entries.items() if e.lfs} == {"model.safetensors", "weights/a.txt",
                                                              "sub/w.safetensors"}  # small, yet LFS
        assert entries["tokenizer.json"].blob_id == git_blob_sha1(TOKENIZER)  # 300 kB, yet a plain git file
        assert entries["tokenizer.json"].size == len(TOKENIZER)
        resp = raw(hub, "HEAD", f"/{REPO}/resolve/main/tokenizer.json")
        assert resp.status == 200 and resp.getheader("ETag") == f'"{git_blob_sha1(TOKENIZER)}"'
        path = hf_hub_download(REPO, "tokenizer.json", cache_dir=tmp_path, endpoint=hub.url, token=False)
        assert Path(path).resolve().name == git_blob_sha1(TOKENIZER) and Path(path).read_bytes() == TOKENIZER
        # No .gitattributes at all: nothing is LFS, as in git.
        hub.add_repo("org/plain", {"model.safetensors": WEIGHTS}, gitattributes=None)
        [entry] = HfApi(endpoint=hub.url, token=False).list_repo_tree("org/plain")
        assert entry.lfs is None and entry.blob_id == git_blob_sha1(WEIGHTS)  # type: ignore[union-attr]


def test_not_found_errors(hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/missing")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="nope")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json", cache_dir=tmp_path, endpoint=hub.url, token=False)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="nope", cache_dir=tmp_path, endpoint=hub.url, token=False)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "missing.json", cache_dir=tmp_path, endpoint=hub.url, token=False)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="nope", local_dir=tmp_path / "x", endpoint=hub.url, token=False)
    r = requests.get(f"{hub.url}/{REPO}/resolve/main/missing.json")
    assert r.status_code == 404 and r.headers["X-Error-Code"] == "EntryNotFound" and "error" in r.json()
    assert r.headers["X-Repo-Commit"] == hub.commit  # type: ignore[attr-defined]


def test_missing_and_private_repos_are_401_repo_not_found_unless_authenticated(hub: FakeHub, tmp_path: Path) -> None:
    hub.token = "hf_secret"
    hub.add_repo("org/private", {"config.json": CONFIG, "model.safetensors": WEIGHTS}, private=True)
    # The same answer for a repo that does not exist and one you may not see: nothing to learn from it.
    for repo in ("org/missing", "org/private"):
        for auth in ({}, {"Authorization": "Bearer hf_wrong"}):
            for path in (f"/api/models/{repo}", f"/api/models/{repo}/tree/main", f"/{repo}/resolve/main/config.json"):
                r = requests.get(hub.url + path, headers=auth)
                assert (r.status_code, r.headers.get("X-Error-Code")) == (401, "RepoNotFound"), (repo, auth, path)
        for token in (False, "hf_wrong"):
            with pytest.raises(RepositoryNotFoundError) as e:
                HfApi(endpoint=hub.url, token=token).model_info(repo)
            assert not isinstance(e.value, GatedRepoError)
            with pytest.raises(RepositoryNotFoundError):
                hf_hub_download(repo, "config.json", cache_dir=tmp_path, endpoint=hub.url, token=token)
    good = {"Authorization": "Bearer hf_secret"}
    r = requests.get(f"{hub.url}/api/models/org/missing", headers=good)
    assert (r.status_code, r.headers.get("X-Error-Code")) == (404, "RepoNotFound")  # authenticated: the truth
    info = HfApi(endpoint=hub.url, token="hf_secret").model_info("org/private")
    assert info.private is True
    out = tmp_path / "private"
    snapshot_download("org/private", local_dir=out, endpoint=hub.url, token="hf_secret")
    assert tree_bytes(out)["model.safetensors"] == WEIGHTS


def test_a_renamed_repo_answers_307_to_its_new_name(hub: FakeHub, big_file: Path, tmp_path: Path) -> None:
    hub.rename_repo(REPO, "org/renamed")
    resp = raw(hub, "GET", f"/api/models/{REPO}/revision/main?blobs=true")
    assert resp.status == 307 and resp.getheader("Location") == "/api/models/org/renamed/revision/main?blobs=true"
    resp = raw(hub, "HEAD", f"/{REPO}/resolve/main/1_Pooling/config.json")
    assert resp.status == 307 and resp.getheader("Location") == "/org/renamed/resolve/main/1_Pooling/config.json"
    resp = raw(hub, "HEAD", f"/{REPO}/resolve/main/model.safetensors")
    assert resp.status == 307 and resp.getheader("X-Linked-Etag") is None  # the metadata comes with the next hop
    # The real client follows both (relative redirects only, for this very case).
    assert HfApi(endpoint=hub.url, token=False).model_info(REPO).id == "org/renamed"
    out = tmp_path / "out"
    snapshot_download(REPO, local_dir=out, endpoint=hub.url, token=False)
    assert tree_bytes(out) == expected_files(big_file)
    assert any(r.status == 307 and r.kind == "resolve" for r in hub.requests)
    # A new repo under the old name ends the redirect, as on the hub.
    hub.add_repo(REPO, {"config.json": b"{}"})
    assert requests.get(f"{hub.url}/{REPO}/resolve/main/config.json").content == b"{}"
    assert requests.get(f"{hub.url}/org/renamed/resolve/main/config.json").content == CONFIG


def test_percent_encoded_paths(tmp_path: Path) -> None:
    with FakeHub() as hub:
        commit = hub.add_repo(REPO, {"dir/my file+%.txt": b"spaced"}, branch="feature/x")
        url = hub.add_file("plain dir/ü.gguf", b"gguf")
        assert requests.get(url).content == b"gguf"
        assert requests.get(f"{hub.url}/{REPO}/resolve/feature%2Fx/dir/my%20file%2B%25.txt").content == b"spaced"
        out = tmp_path / "out"
        snapshot_download(REPO, revision="feature/x", local_dir=out, endpoint=hub.url, token=False)
        assert tree_bytes(out) == {".gitattributes": DEFAULT_GITATTRIBUTES, "dir/my file+%.txt": b"spaced"}
        assert HfApi(endpoint=hub.url, token=False).model_info(REPO, revision="feature/x").sha == commit


# -- auth and CDN ------------------------------------------------------------------------------------------


def test_gated_repo_requires_token(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo("org/gated", {"config.json": CONFIG, "model.safetensors": WEIGHTS}, gated=True)
    hub.token = "hf_secret"
    with pytest.raises(GatedRepoError):
        snapshot_download("org/gated", local_dir=tmp_path / "no", endpoint=hub.url, token=False)
    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "config.json", cache_dir=tmp_path, endpoint=hub.url, token="hf_wrong")
    r = requests.get(f"{hub.url}/org/gated/resolve/main/config.json")
    assert r.status_code == 401 and r.headers["X-Error-Code"] == "GatedRepo"  # no token
    r = requests.get(f"{hub.url}/org/gated/resolve/main/config.json", headers={"Authorization": "Bearer hf_wrong"})
    assert r.status_code == 403 and r.headers["X-Error-Code"] == "GatedRepo"  # a token without access

    hub.clear_log()
    out = tmp_path / "yes"
    snapshot_download("org/gated", local_dir=out, endpoint=hub.url, token="hf_secret")
    assert tree_bytes(out) == {".gitattributes": DEFAULT_GITATTRIBUTES, "config.json": CONFIG,
                               "model.safetensors": WEIGHTS}
    assert all(r.auth_value == "Bearer hf_secret" for r in hub.requests if r.server == "hub")
    assert [r.path.rsplit("/", 1)[-1] for r in hub.requests if r.server == "cdn"] == ["model.safetensors"]
    assert not hub.cdn_saw_auth  # the client dropped the token when the redirect left the hub
    assert HfApi(endpoint=hub.url, token=False).model_info("org/gated").gated == "auto"  # metadata stays public
    assert requests.get(f"{hub.url}/{REPO}/resolve/main/config.json").content == CONFIG  # others stay open

    hub.require_token_everywhere = True
    url = hub.add_file("x.bin", b"x")
    for path in (url, f"{hub.url}/api/models/{REPO}", f"{hub.url}/{REPO}/resolve/main/config.json"):
        assert requests.get(path).status_code == 401
        assert requests.get(path, headers={"Authorization": "Bearer hf_wrong"}).status_code == 403
        assert requests.get(path, headers={"Authorization": "Bearer hf_secret"}).status_code == 200


def test_cdn_redirect_drops_the_token(big_file: Path, tmp_path: Path) -> None:
    with FakeHub(cdn=True, token="hf_secret") as hub:
        assert hub.cdn and hub.cdn != hub.url
        commit = hub.add_repo(REPO, expected_files(big_file), gated=True)
        resp = raw(hub, "HEAD", f"/{REPO}/resolve/main/model.safetensors",
                         {"Authorization": "Bearer hf_secret"})
        assert resp.status == 302
        assert resp.getheader("Location", "").startswith(hub.cdn)
        assert resp.getheader("X-Linked-Etag") == f'"{sha256(WEIGHTS)}"'
        assert resp.getheader("X-Linked-Size") == str(len(WEIGHTS))
        assert resp.getheader("X-Repo-Commit") == commit
        cdn_etag = requests.head(resp.getheader("Location", "")).headers["ETag"]
        assert len(cdn_etag) == 66 and sha256(WEIGHTS) not in cdn_etag  # like the real CDN: not the sha256

        hub.clear_log()
        out = tmp_path / "out"
        snapshot_download(REPO, local_dir=out, endpoint=hub.url, token="hf_secret")
        assert tree_bytes(out) == expected_files(big_file)
        cdn = [r for r in hub.requests if r.server == "cdn"]
        assert {r.path.rsplit("/", 1)[-1] for r in cdn} == {"model.safetensors", "pytorch_model.bin"}
        assert all(r.method == "GET" and r.status == 200 and not r.auth for r in cdn)
        assert all(r.auth for r in hub.requests if r.server == "hub") and not hub.cdn_saw_auth
        assert sum(r.bytes_sent for r in cdn) == len(WEIGHTS) + big_file.stat().st_size
        # Body faults on an LFS file land on the CDN request, which carries the bytes.
        hub.add_fault("model.safetensors", "truncate", after=10)
        resp = requests.get(f"{hub.url}/{REPO}/resolve/main/model.safetensors", stream=True,
                            headers={"Authorization": "Bearer hf_secret"})
        assert resp.raw.read(20) == WEIGHTS[:10]
        assert (hub.requests[-1].server, hub.requests[-1].fault, hub.requests[-1].fault_at) == ("cdn", "truncate", 10)
        # The CDN records an Authorization header should a client send one, so a leak cannot go unseen.
        location = raw(hub, "HEAD", f"/{REPO}/resolve/main/model.safetensors",
                       {"Authorization": "Bearer hf_secret"}).getheader("Location", "")
        assert requests.get(location, headers={"Authorization": "Bearer hf_secret"}).content == WEIGHTS
        assert hub.cdn_saw_auth


def test_signed_cdn_urls_expire_and_cannot_be_altered(hub: FakeHub) -> None:
    hub.link_ttl = 0.5
    location = raw(hub, "HEAD", f"/{REPO}/resolve/main/model.safetensors").getheader("Location", "")
    assert requests.get(location, headers={"Range": "bytes=0-9"}).content == WEIGHTS[:10]
    split = urlsplit(location)
    query = parse_qs(split.query)
    base = f"{split.scheme}://{split.netloc}"
    later = f"{float(query['Expires'][0]) + 3600:.3f}"
    for url in (f"{base}{split.path}?Expires={later}&Signature={query['Signature'][0]}",  # a longer life
                f"{base}/{REPO}/resolve/{hub.commit}/pytorch_model.bin?{split.query}",  # type: ignore[attr-defined]
                f"{base}{split.path}",  # unsigned
                f"{base}{split.path}?Expires={query['Expires'][0]}&Signature={'0' * 64}"):
        r = requests.get(url)
        assert r.status_code == 403 and b"AccessDenied" in r.content, url
        assert hub.requests[-1].refused == "bad signature"
    time.sleep(0.6)
    r = requests.get(location)
    assert r.status_code == 403 and b"expired" in r.content and hub.requests[-1].refused == "expired"
    assert hub.body_bytes() == 10  # nothing but the first, valid request's range
    # A new resolve signs a new URL that works again.
    assert requests.get(f"{hub.url}/{REPO}/resolve/main/model.safetensors").content == WEIGHTS


# -- ranges, keep-alive, streaming -------------------------------------------------------------------------


def test_ranges(hub: FakeHub) -> None:
    url = f"{hub.url}/{REPO}/resolve/main/model.safetensors"
    size = len(WEIGHTS)
    r = requests.get(url, headers={"Range": "bytes=100-"})
    assert r.status_code == 206 and r.content == WEIGHTS[100:]
    assert r.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"
    r = requests.get(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == WEIGHTS[10:20]
    r = requests.get(url, headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == WEIGHTS[-5:]
    r = requests.get(url, headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{size}"
    assert hub.requests[0].range == "bytes=100-"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(0, 1200), length=st.one_of(st.none(), st.integers(0, 1200)))
def test_range_property(hub: FakeHub, start: int, length: int | None) -> None:
    data = CONFIG * 50  # 1000 bytes, served as a plain file
    url = hub.add_file("r.txt", data)
    spec = f"bytes={start}-" if length is None else f"bytes={start}-{start + length}"
    r = requests.get(url, headers={"Range": spec})
    if start >= len(data):
        assert r.status_code == 416
    else:
        end = len(data) if length is None else min(len(data), start + length + 1)
        assert (r.status_code, r.content) == (206, data[start:end])
        assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(data)}"


def test_keep_alive(hub: FakeHub) -> None:
    with requests.Session() as s:
        for _ in range(3):
            assert s.get(f"{hub.url}/{REPO}/resolve/main/config.json").content == CONFIG
    assert len({r.conn for r in hub.requests}) == 1


def test_large_path_files_stream_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "big.gguf"
    with open(path, "wb") as f:
        for _ in range(24):
            f.write(os.urandom(1 << 20))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with FakeHub() as hub:
        url = hub.add_file("m/big.gguf", path)
        tracemalloc.start()
        try:
            got = hashlib.sha256()
            with requests.get(url, stream=True) as r:
                for chunk in r.iter_content(64 * 1024):
                    got.update(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert got.hexdigest() == digest
        assert peak < 8 << 20  # a few 1 MiB chunks in flight, never the 24 MiB file
        assert hub.body_bytes("big.gguf") == 24 << 20


# -- faults ------------------------------------------------------------------------------------------------


def test_fault_reset(hub: FakeHub) -> None:
    hub.add_fault("model.safetensors", "reset", after=1000)
    resp = raw(hub, "GET", f"/{REPO}/resolve/main/model.safetensors", follow=True)
    assert resp.status == 200 and resp.getheader("Content-Length") == str(len(WEIGHTS))
    assert resp.read(1000) == WEIGHTS[:1000]
    with pytest.raises(ConnectionResetError):
        resp.read()
    last = hub.requests[-1]
    assert (last.bytes_sent, last.fault, last.fault_at) == (1000, "reset", 1000)
    assert hub.unfired_faults() == []
    assert requests.get(f"{hub.url}/{REPO}/resolve/main/model.safetensors").content == WEIGHTS  # times=1


def test_fault_truncate(hub: FakeHub) -> None:
    hub.add_fault("config.json", "truncate", times=2)  # default: half the body
    for _ in range(2):
        resp = raw(hub, "GET", f"/{REPO}/resolve/main/config.json")
        with pytest.raises(http.client.IncompleteRead) as e:
            resp.read()
        assert e.value.partial == CONFIG[: len(CONFIG) // 2]
    assert requests.get(f"{hub.url}/{REPO}/resolve/main/config.json").content == CONFIG


def test_truncated_download_is_resumed_by_the_real_client(tmp_path: Path) -> None:
    # The client reads in 10 MiB chunks and resumes from the last whole chunk, so cut past 10 MiB.
    data = os.urandom(11 << 20)
    with FakeHub() as hub:
        hub.add_repo(REPO, {"model.safetensors": data})
        hub.add_fault("model.safetensors", "truncate", after=(10 << 20) + 12345)
        path = hf_hub_download(REPO, "model.safetensors", local_dir=tmp_path, endpoint=hub.url, token=False)
        assert hashlib.sha256(Path(path).read_bytes()).digest() == hashlib.sha256(data).digest()
        gets = [r for r in hub.requests if r.method == "GET"]
        assert [(r.fault, r.range, r.status) for r in gets] == [("truncate", None, 200),
                                                                (None, f"bytes={10 << 20}-", 206)]
        assert hub.body_bytes() == (10 << 20) + 12345 + (1 << 20)


def test_fault_status(hub: FakeHub) -> None:
    hub.add_fault("config.json", "status", code=503, headers={"Retry-After": "1"})
    r = requests.get(f"{hub.url}/{REPO}/resolve/main/config.json")
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert requests.get(f"{hub.url}/{REPO}/resolve/main/config.json").status_code == 200
    hub.add_fault("/tree/", "status", api=True, code=429)
    assert requests.get(f"{hub.url}/api/models/{REPO}/tree/main").status_code == 429
    assert requests.get(f"{hub.url}/api/models/{REPO}/tree/main").status_code == 200


def test_fault_stall_blocks_nothing_else_and_not_shutdown(big_file: Path) -> None:
    hub = FakeHub().start()
    hub.add_repo(REPO, expected_files(big_file))
    hub.add_fault("model.safetensors", "stall", after=100, seconds=30)
    resp = raw(hub, "GET", f"/{REPO}/resolve/main/model.safetensors", timeout=0.3, follow=True)
    assert resp.status == 200 and resp.read(100) == WEIGHTS[:100]
    with pytest.raises(TimeoutError):
        resp.read(1)
    started = time.monotonic()
    assert requests.get(f"{hub.url}/{REPO}/resolve/main/config.json", timeout=2).content == CONFIG
    # A stalled download in a thread of its own, then stop(): must not wait out the 30 s.
    hub.add_fault("model.safetensors", "stall", seconds=30)
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _swallow(errors, requests.get,
                                                 f"{hub.url}/{REPO}/resolve/main/model.safetensors", timeout=10))
    t.start()
    time.sleep(0.2)
    hub.stop()
    t.join(timeout=5)
    assert not t.is_alive() and errors  # the stalled client saw its connection die
    assert time.monotonic() - started < 20  # well short of the 30 s stall: stop() cut it


def _swallow(errors: list[BaseException], fn, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(*args, **kwargs)
    except BaseException as e:  # noqa: BLE001 - the test inspects it
        errors.append(e)


def test_fault_stall_then_continue(hub: FakeHub) -> None:
    hub.add_fault("config.json", "stall", seconds=0.3)
    started = time.monotonic()
    assert requests.get(f"{hub.url}/{REPO}/resolve/main/config.json").content == CONFIG
    assert time.monotonic() - started >= 0.3
    # A released stall goes on at once.
    stall = hub.add_fault("config.json", "stall", seconds=60)
    threading.Timer(0.2, stall.release).start()
    started = time.monotonic()
    assert requests.get(f"{hub.url}/{REPO}/resolve/main/config.json", timeout=30).content == CONFIG
    assert time.monotonic() - started < 30


def test_a_body_fault_waits_for_a_response_carrying_its_byte(hub: FakeHub) -> None:
    url = hub.add_file("w.bin", WEIGHTS)
    reset = hub.add_fault("w.bin", "reset", at=30_000)
    corrupt = hub.add_fault("w.bin", "corrupt", offset=5)
    # Ranges that miss both offsets: served whole, and neither fault is spent.
    for spec in ("bytes=10-9999", "bytes=40000-"):
        r = requests.get(url, headers={"Range": spec})
        assert r.status_code == 206 and r.content == WEIGHTS[int(spec[6:].split("-")[0]):][: len(r.content)]
    assert [r.fault for r in hub.requests] == [None, None]
    assert hub.unfired_faults() == [reset, corrupt]
    # The range that carries byte 30 000 gets the reset there: 10 000 bytes into the response.
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, headers={"Range": "bytes=20000-"}).content
    assert (hub.requests[-1].fault, hub.requests[-1].fault_at, hub.requests[-1].bytes_sent) == ("reset", 30_000, 10_000)
    body = requests.get(url).content  # the whole file carries byte 5
    assert body[5] == WEIGHTS[5] ^ 0xFF and body[6:] == WEIGHTS[6:]
    assert (hub.requests[-1].fault, hub.requests[-1].fault_at) == ("corrupt", 5)
    assert hub.unfired_faults() == [] and (reset.fired, corrupt.fired) == (1, 1)


def test_a_fault_struck_before_the_client_left_is_spent_one_never_reached_is_not(hub: FakeHub) -> None:
    url = hub.add_file("w.bin", WEIGHTS)
    hub.throttle_bps = 20_000  # two seconds to byte 40 000
    fault = hub.add_fault("w.bin", "truncate", at=40_000)
    resp = raw(hub, "GET", "/files/w.bin")
    assert resp.read(1000) == WEIGHTS[:1000]
    _raw_conns[-1].close()  # gone long before byte 40 000
    deadline = time.monotonic() + 10
    while hub.requests[-1].finished is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hub.requests[-1].fault is None and hub.unfired_faults() == [fault]
    hub.throttle_bps = None
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url).content
    assert hub.requests[-1].fault_at == 40_000 and hub.unfired_faults() == []


def test_a_following_fault_waits_for_the_one_before(hub: FakeHub) -> None:
    url = hub.add_file("w.bin", WEIGHTS)
    reset = hub.add_fault("w.bin", "reset", at=20_000)
    ignore = hub.add_fault("w.bin", "ignore_range", following=reset)
    r = requests.get(url, headers={"Range": "bytes=0-999"})
    assert r.status_code == 206 and hub.requests[-1].fault is None  # ignore_range not armed yet
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url).content
    r = requests.get(url, headers={"Range": "bytes=19000-"})
    assert r.status_code == 200 and r.content == WEIGHTS and hub.requests[-1].fault == "ignore_range"
    assert hub.unfired_faults() == [] and ignore.fired == 1


def test_fault_corrupt(hub: FakeHub) -> None:
    hub.add_fault("model.safetensors", "corrupt")
    body = requests.get(f"{hub.url}/{REPO}/resolve/main/model.safetensors").content
    assert len(body) == len(WEIGHTS)
    diff = [i for i, (a, b) in enumerate(zip(body, WEIGHTS)) if a != b]
    assert diff == [len(WEIGHTS) // 2] and body[diff[0]] == WEIGHTS[diff[0]] ^ 0xFF
    hub.add_fault("model.safetensors", "corrupt", offset=7)
    body = requests.get(f"{hub.url}/{REPO}/resolve/main/model.safetensors").content
    assert body[7] == WEIGHTS[7] ^ 0xFF and body[8:] == WEIGHTS[8:]


def test_fault_ignore_range(hub: FakeHub) -> None:
    hub.add_fault("model.safetensors", "ignore_range")
    r = requests.get(f"{hub.url}/{REPO}/resolve/main/model.safetensors", headers={"Range": "bytes=100-"})
    assert r.status_code == 200 and r.content == WEIGHTS and "Content-Range" not in r.headers


def test_fault_wrong_length(hub: FakeHub) -> None:
    hub.add_fault("config.json", "wrong_length")
    resp = raw(hub, "GET", f"/{REPO}/resolve/main/config.json")
    assert resp.getheader("Content-Length") == str(len(CONFIG) + 100)
    with pytest.raises(http.client.IncompleteRead) as e:
        resp.read()
    assert e.value.partial == CONFIG
    hub.add_fault("config.json", "wrong_length", delta=-5)
    resp = raw(hub, "GET", f"/{REPO}/resolve/main/config.json")
    assert resp.read() == CONFIG[:-5]


def test_fault_garbage_json(hub: FakeHub) -> None:
    api = HfApi(endpoint=hub.url, token=False)
    hub.add_fault(f"/api/models/{REPO}", "garbage_json", api=True)
    with pytest.raises(ValueError):
        api.model_info(REPO)
    assert api.model_info(REPO).sha == hub.commit  # type: ignore[attr-defined]
    hub.add_fault("/tree/", "garbage_json", api=True)
    assert requests.get(f"{hub.url}/api/models/{REPO}/tree/main").content == b"not json{"


def test_fault_missing_headers(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_fault("config.json", "missing_headers")
    with pytest.raises(LocalEntryNotFoundError, match="X-Repo-Commit"):
        hf_hub_download(REPO, "config.json", cache_dir=tmp_path, endpoint=hub.url, token=False)
    hub.add_fault("config.json", "missing_headers", times=2)
    for method in ("HEAD", "GET"):
        r = requests.request(method, f"{hub.url}/{REPO}/resolve/main/config.json")
        assert r.status_code == 200 and "X-Repo-Commit" not in r.headers and "ETag" not in r.headers


def test_faults_on_plain_files_and_clear(hub: FakeHub) -> None:
    url = hub.add_file("a/b.bin", WEIGHTS)
    hub.add_fault("a/b.bin", "status", times=5, code=500)
    assert requests.get(url).status_code == 500
    assert requests.head(url).status_code == 200  # status faults target GETs unless methods= says otherwise
    hub.clear_faults()
    assert requests.get(url).content == WEIGHTS
    hub.add_fault("a/b.bin", "reset", methods=["HEAD"])  # HEAD has no body: it resets before the headers
    with pytest.raises(requests.ConnectionError):
        requests.head(url)
    assert requests.head(url).headers["Content-Length"] == str(len(WEIGHTS))
    with pytest.raises(ValueError):
        hub.add_fault("x", "explode")


def test_throttle(hub: FakeHub) -> None:
    hub.throttle_bps = 200_000
    started = time.monotonic()
    assert requests.get(f"{hub.url}/{REPO}/resolve/main/model.safetensors").content == WEIGHTS
    assert time.monotonic() - started >= 0.2  # 50 kB at 200 kB/s


def test_real_client_surfaces_status_faults(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_fault("config.json", "status", code=404)  # a plain 404, no X-Error-Code
    with pytest.raises(HfHubHTTPError):
        hf_hub_download(REPO, "config.json", cache_dir=tmp_path, endpoint=hub.url, token=False)


# -- standalone mode ---------------------------------------------------------------------------------------


def test_fakehub_imports_only_the_stdlib() -> None:
    tree = ast.parse(FAKEHUB.read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert modules - {"__future__"} <= sys.stdlib_module_names


def test_standalone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pinned = data / "repos" / "org" / "pinned"
    (pinned / "1_Pooling").mkdir(parents=True)
    (pinned / "config.json").write_bytes(CONFIG)
    (pinned / "1_Pooling" / "config.json").write_bytes(POOLING)
    (pinned / "model.safetensors").write_bytes(WEIGHTS)
    pin = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
    (data / "repos" / "org" / "pinned.commit").write_text(pin + "\n")
    (data / "repos" / "org" / "plain").mkdir()
    (data / "repos" / "org" / "plain" / "a.txt").write_bytes(b"a")
    (data / "files" / "x").mkdir(parents=True)
    (data / "files" / "x" / "f.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")

    # -S: no site-packages, as in a bare python:3.11-slim image.
    proc = subprocess.Popen([sys.executable, "-S", str(FAKEHUB), "--data", str(data), "--host", "127.0.0.1",
                             "--port", "0", "--token", "hf_secret"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("fakehub listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        cdn = proc.stdout.readline().strip().rsplit(" ", 1)[1]
        assert cdn.startswith("http://127.0.0.1:") and cdn != url
        out = tmp_path / "out"
        snapshot_download("org/pinned", local_dir=out, endpoint=url, token="hf_secret")
        # Exactly the files on disk (no .gitattributes invented), LFS by the default rules: through the CDN.
        assert tree_bytes(out) == {"config.json": CONFIG, "1_Pooling/config.json": POOLING,
                                   "model.safetensors": WEIGHTS}
        resolve = requests.head(f"{url}/org/pinned/resolve/main/model.safetensors",
                                headers={"Authorization": "Bearer hf_secret"})
        assert resolve.status_code == 302 and resolve.headers["Location"].startswith(f"{cdn}/org/pinned/resolve/{pin}/")
        api = HfApi(endpoint=url, token=False)
        assert api.model_info("org/pinned").sha == pin
        assert api.model_info("org/plain").sha == commit_sha({"a.txt": sha256(b"a")})
        assert api.model_info("org/plain").sha == hashlib.sha1(f"a.txt\0{sha256(b'a')}\n".encode()).hexdigest()
        assert requests.get(f"{url}/files/x/f.gguf").content == b"GGUF\x03\x00\x00\x00"  # plain URLs: no token
        assert requests.get(f"{url}/org/plain/resolve/main/a.txt").status_code == 401

        log = requests.get(f"{url}/_log").json()
        assert any(r["auth"] for r in log) and any(not r["auth"] for r in log)
        assert "hf_secret" not in json.dumps(log)
        assert requests.post(f"{url}/_log/clear").ok and requests.get(f"{url}/_log").json() == []
        fault = {"match": "f.gguf", "kind": "status", "times": 1, "code": 503, "headers": {"Retry-After": "1"}}
        assert requests.post(f"{url}/_faults", json=fault).ok
        r = requests.get(f"{url}/files/x/f.gguf")
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert requests.get(f"{url}/_log").json()[-1]["fault"] == "status"
        fault = {"match": "f.gguf", "kind": "reset", "at": 100}  # beyond the 8-byte file: can never fire
        assert requests.post(f"{url}/_faults", json=fault).ok
        assert requests.get(f"{url}/files/x/f.gguf").content == b"GGUF\x03\x00\x00\x00"
        assert requests.get(f"{url}/_faults").json() == [{**fault, "times": 1, "fired": 0}]
        assert requests.post(f"{url}/_faults", json={"match": "x", "kind": "nope"}).status_code == 400
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        proc.stdout.close()  # type: ignore[union-attr]


def test_standalone_bound_everywhere_names_the_cdn_by_the_host_the_client_used(tmp_path: Path) -> None:
    # A container reaches a hub on the host network at the bridge gateway: the CDN must be named the same way.
    repo = tmp_path / "data" / "repos" / "org" / "m"
    repo.mkdir(parents=True)
    (repo / "model.safetensors").write_bytes(WEIGHTS)
    (repo / "big.json").write_bytes(TOKENIZER)
    proc = subprocess.Popen([sys.executable, "-S", str(FAKEHUB), "--data", str(tmp_path / "data"), "--host", "0.0.0.0",
                             "--port", "0", "--link-ttl", "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip().rsplit(":", 1)[1])
        cdn_port = int(proc.stdout.readline().strip().rsplit(":", 1)[1])
        for name in ("127.0.0.1", "localhost"):
            r = requests.head(f"http://{name}:{port}/org/m/resolve/main/model.safetensors")
            location = urlsplit(r.headers["Location"])
            assert r.status_code == 302 and (location.hostname, location.port) == (name, cdn_port)
            assert 55 < float(parse_qs(location.query)["Expires"][0]) - time.time() <= 60
            assert requests.get(r.headers["Location"]).content == WEIGHTS
        # Not in .gitattributes' LFS patterns: served by the hub itself, whatever its size.
        r = requests.head(f"http://127.0.0.1:{port}/org/m/resolve/main/big.json")
        assert r.status_code == 200 and r.headers["ETag"] == f'"{git_blob_sha1(TOKENIZER)}"'
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        proc.stdout.close()  # type: ignore[union-attr]
