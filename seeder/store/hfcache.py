"""A Hugging Face cache, read as a cache: ``~/.cache/huggingface/hub``, or the ``HF_HOME`` holding it.

huggingface_hub names a blob by the hub's ETag: the sha256 for LFS (and Xet) files, the git blob
sha1 for the rest; both are digests a lock pins, so ``<repo>/blobs/<etag>`` is found by content. Where
a filesystem had no symlinks, huggingface_hub moved each blob into its snapshot instead; those files
are found by the digests the commit's listing (``trees/<commit>.json``) gives them. Every file is
hashed on its way into a target like any cached blob, so a name or a listing proves nothing.

Nothing is ever written there: the cache is the user's, and huggingface_hub's own ``scan_cache_dir()``
calls any entry it did not make a corrupted repo.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from ..spec.paths import check_relpath
from .cache import ReadOnlyCache

_REPO_DIR = re.compile(r"(models|datasets|spaces)--.+")
_MARKERS = (".locks", "CACHEDIR.TAG", "version.txt")  # what huggingface_hub keeps beside the repos
_ETAG = {64: "sha256", 40: "gitsha1"}  # an ETag's length says which digest it is
_HEX = re.compile(r"[0-9a-f]+")


def hub_of(path: Path) -> Path | None:
    """The HF hub cache that ``path`` names: itself, or the ``hub/`` of an ``HF_HOME``; None if neither."""
    if _is_hub(path):
        return path
    # A seeder cache never has a hub/, so even an empty one makes an HF_HOME, which nothing may write to.
    return path / "hub" if (path / "hub").is_dir() else None


def _is_hub(path: Path) -> bool:
    names = _names(path)
    # One repo directory decides: a hub dir an older seeder wrote blobs/ tmp/ locks/ into is still one.
    return any(_REPO_DIR.fullmatch(n) for n in names) or (bool(names) and all(n in _MARKERS for n in names))


class HfCache(ReadOnlyCache):
    def _list(self) -> dict[str, Path]:
        index: dict[str, Path] = {}
        for name in _names(self.root):
            if _REPO_DIR.fullmatch(name):
                for digest, path in (*_blobs(self.root / name), *_moved(self.root / name)):
                    index.setdefault(digest, path)
        return index


def _blobs(repo: Path) -> list[tuple[str, Path]]:
    out = []
    for name in _names(repo / "blobs"):
        kind = _ETAG.get(len(name))
        if kind and _HEX.fullmatch(name):  # not a download in flight (<etag>.<random>.incomplete)
            out.append((f"{kind}-{name}", repo / "blobs" / name))
    return out


def _moved(repo: Path) -> list[tuple[str, Path]]:
    """Snapshot files that are no links: blobs moved there where the filesystem had no symlinks."""
    out = []
    for commit in _names(repo / "snapshots"):
        for path, digest in _listing(repo / "trees" / f"{commit}.json"):
            file = repo / "snapshots" / commit / path
            if stat.S_ISREG(_mode(file)):  # a link leads to a blob: _blobs has it
                out.append((digest, file))
    return out


def _listing(tree: Path) -> list[tuple[str, str]]:
    """(path, digest) of every file a commit's listing names; nothing from one that is absent or unreadable,
    and no entry that is malformed or whose path could leave the snapshot."""
    try:
        entries = list(json.loads(tree.read_text(encoding="utf-8"))["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    out = []
    for path, info in entries:
        if not isinstance(info, dict) or check_relpath(path):
            continue
        sha256, blob_id = info.get("lfs_sha256"), info.get("blob_id")
        if isinstance(sha256, str) and len(sha256) == 64 and _HEX.fullmatch(sha256):
            out.append((path, f"sha256-{sha256}"))
        elif isinstance(blob_id, str) and len(blob_id) == 40 and _HEX.fullmatch(blob_id):
            out.append((path, f"gitsha1-{blob_id}"))
    return out


def _names(directory: Path) -> list[str]:
    """The entries of ``directory``, sorted; none when it is unreadable: what cannot be read is no source."""
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _mode(path: Path) -> int:
    try:
        return path.lstat().st_mode
    except OSError:
        return 0
