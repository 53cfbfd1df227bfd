"""An existing Hugging Face cache (``~/.cache/huggingface/hub``, or the ``HF_HOME`` holding it) as a
read-only ``--cache``: filled by huggingface_hub's own ``snapshot_download`` from the fake hub, read by
content, never written."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

# Read by huggingface_hub at import time, hence before the imports below.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest
from huggingface_hub import scan_cache_dir, snapshot_download

from tests.conftest import blob, file_sha256, run_seeder, sha256, url_entry
from tests.fakehub import git_blob_sha1
from tests.test_seeded_cache import mounted

REPO = "org/emb"
FILES = {
    "config.json": b'{"hidden_size": 8}',
    "vocab.txt": b"[PAD]\n[UNK]\nhello\n",
    "model.safetensors": blob(300_000, seed=21),  # LFS: its cache blob is named by its sha256
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "README.md": b"# not wanted",
}
WANTED = ["config.json", "vocab.txt", "model.safetensors", "1_Pooling/config.json"]
MANIFEST = f"""[[models]]
name = "embedding"
repo = "{REPO}"
include = ["*.json", "*.txt", "model.safetensors", "1_Pooling/*"]
"""


def listing(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` as it is on disk: symlinks by their text, files by content, inode, link
    count and mtime (a hardlink from a target raises the count), directories by mtime (an entry made and
    removed again still moves it)."""
    out = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        key = path.relative_to(root).as_posix()
        if stat.S_ISLNK(st.st_mode):
            out[key] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[key] = ("dir", st.st_mtime_ns)
        else:
            out[key] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), st.st_ino, st.st_nlink,
                        st.st_mtime_ns)
    return out


def assert_scans_clean(hub_dir: Path) -> None:
    report = scan_cache_dir(hub_dir)
    assert report.warnings == []
    assert [(r.repo_id, len(r.revisions)) for r in report.repos] == [(REPO, 1)]


def filled(hub, home: Path, manifest: Path) -> Path:
    """``home`` made an HF_HOME whose hub/ holds the repo, as huggingface_hub leaves it; ``manifest`` locked."""
    snapshot_download(REPO, cache_dir=home / "hub", endpoint=hub.url, token=False)
    manifest.write_text(MANIFEST)
    assert run_seeder("lock", "-m", str(manifest), hub=hub).code == 0
    hub.clear_log()
    return home


@pytest.fixture
def hf_home(hub, tmp_path: Path) -> Path:
    hub.add_repo(REPO, FILES)
    return filled(hub, tmp_path / "huggingface", tmp_path / "models.toml")


def seed(tmp_path: Path, hub, *caches: Path | str, manifest: str = "models.toml", target: str = "models"):
    flags = [a for c in caches for a in ("--cache", str(c))]
    return run_seeder("-m", str(tmp_path / manifest), "-t", str(tmp_path / target), *flags, hub=hub)


def blob_of(home: Path, data: bytes, lfs: bool) -> Path:
    return home / "hub" / "models--org--emb" / "blobs" / (sha256(data) if lfs else git_blob_sha1(data))


@pytest.mark.parametrize("given", ["hub", "HF_HOME"])
def test_a_user_s_hf_cache_seeds_a_target_with_no_download(hub, tmp_path, hf_home, given):
    before = listing(hf_home)
    run = seed(tmp_path, hub, hf_home / "hub" if given == "hub" else hf_home)
    assert run.code == 0, run
    assert hub.body_bytes() == 0 and hub.requests == []
    for path in WANTED:
        assert (tmp_path / "models" / "embedding" / path).read_bytes() == FILES[path]
    assert listing(hf_home) == before  # not a byte, link, entry or hardlink more
    assert_scans_clean(hf_home / "hub")
    assert run_seeder("verify", "-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "models"),
                      hub=hub).code == 0


def test_an_hf_cache_an_older_seeder_wrote_into_is_still_only_read(hub, tmp_path, hf_home):
    for name in ("blobs", "locks", "tmp"):  # what seeder used to leave there, taking it for a cache of its own
        (hf_home / "hub" / name).mkdir()
    before = listing(hf_home)
    run = seed(tmp_path, hub, hf_home / "hub")
    assert run.code == 0, run
    assert hub.body_bytes() == 0
    assert listing(hf_home) == before


def test_damaged_blobs_in_an_hf_cache_are_never_installed(hub, tmp_path, hf_home):
    lfs, small = blob_of(hf_home, FILES["model.safetensors"], lfs=True), blob_of(hf_home, FILES["vocab.txt"], lfs=False)
    for victim in (lfs, small):
        victim.write_bytes(b"X" * victim.stat().st_size)  # same size: only hashing notices
    before = listing(hf_home)
    run = seed(tmp_path, hub, hf_home / "hub")
    assert run.code == 0, run
    damaged = sorted((e["event"], e["cache"], e["file"]) for e in run.events if e["level"] == "warning")
    assert damaged == [("cached copy damaged, downloading again", str(hf_home / "hub"), name)
                       for name in ("model.safetensors", "vocab.txt")], run.err
    assert hub.body_bytes() == len(FILES["model.safetensors"]) + len(FILES["vocab.txt"])
    for path in WANTED:
        assert (tmp_path / "models" / "embedding" / path).read_bytes() == FILES[path]
    assert listing(hf_home) == before  # still damaged: the user's cache is not ours to repair
    assert_scans_clean(hf_home / "hub")


def test_downloads_land_in_the_next_writable_cache_never_in_the_hf_cache(hub, tmp_path, hf_home):
    gguf = b"GGUF" + blob(200_000, seed=22)
    (tmp_path / "more.toml").write_text(MANIFEST + url_entry("llm", hub.add_file("tiny.gguf", gguf), gguf))
    before = listing(hf_home)
    mine = tmp_path / "cache"
    run = seed(tmp_path, hub, hf_home / "hub", mine, manifest="more.toml")
    assert run.code == 0, run
    assert hub.body_bytes() == len(gguf)  # only what the HF cache lacks
    assert file_sha256(mine / "blobs" / f"sha256-{sha256(gguf)}") == sha256(gguf)
    assert not (mine / "blobs" / f"sha256-{sha256(FILES['model.safetensors'])}").exists()  # copied, not re-cached
    assert listing(hf_home) == before
    assert_scans_clean(hf_home / "hub")


def test_a_cache_made_without_symlinks_is_found_through_its_snapshots(hub, tmp_path, monkeypatch):
    # huggingface_hub's fallback where a filesystem has no symlinks: each blob moves into its snapshot.
    import huggingface_hub.file_download as file_download

    monkeypatch.setattr(file_download, "are_symlinks_supported", lambda *_: False)
    hub.add_repo(REPO, FILES)
    home = tmp_path / "huggingface"
    snapshot_download(REPO, cache_dir=home / "hub", endpoint=hub.url, token=False)
    assert not any(p.is_symlink() for p in home.rglob("*"))
    (tmp_path / "models.toml").write_text(MANIFEST)
    assert run_seeder("lock", "-m", str(tmp_path / "models.toml"), hub=hub).code == 0
    hub.clear_log()
    before = listing(home)
    run = seed(tmp_path, hub, home)
    assert run.code == 0, run
    assert hub.body_bytes() == 0
    for path in WANTED:
        assert (tmp_path / "models" / "embedding" / path).read_bytes() == FILES[path]
    assert listing(home) == before


def test_cache_commands_leave_an_hf_cache_alone(hub, tmp_path, hf_home):
    before = listing(hf_home)
    for action in ("du", "prune"):
        run = run_seeder("cache", action, "-m", str(tmp_path / "models.toml"), "--cache", str(hf_home), hub=hub)
        assert run.code == 0, run
        assert [e["cache"] for e in run.events if e["event"].startswith("skipped")] == [str(hf_home / "hub")], run
    assert listing(hf_home) == before


def test_copies_from_an_hf_cache_on_the_target_s_filesystem_need_room_there_too(hub, tmp_path):
    # Copied, not hardlinked, even where a hardlink could be made: the copies take room of their own.
    hub.add_repo(REPO, FILES)
    fs = tmp_path / "fs"
    fs.mkdir()
    with mounted(fs, "-t", "tmpfs", "-o", "size=512k", "seeder-small"):
        home = filled(hub, fs / "huggingface", tmp_path / "models.toml")
        before = listing(home)
        run = seed(tmp_path, hub, home, target="fs/models")
        assert run.code == 4 and f"not enough space in {fs / 'models'}: need " in run.err, run
        assert not any(p.is_file() for p in (fs / "models" / ".seeder" / "versions").rglob("*"))
        assert hub.requests == []
        assert listing(home) == before
