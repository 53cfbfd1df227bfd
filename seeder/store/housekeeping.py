"""Cache housekeeping: how much is stored, and deleting what no lock references."""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..spec import lock as lockfile
from ..spec import manifest as manifests
from .cache import Cache


@dataclass
class Usage:
    blobs: int = 0
    bytes: int = 0
    partials: int = 0
    partial_bytes: int = 0


_SCRATCH = re.compile(r"\.(\d+)\.unpacked")
"""A directory an install unpacks a tar layer into, with its pid (install/layers.py); untar's staging
directory beside it carries that name too."""


def sweep_unpacked(tmp: Path) -> None:
    """Remove the unpack directories of processes that are gone (killed mid-run)."""
    try:
        entries = list(tmp.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.is_dir() and not _alive(entry):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(scratch: Path) -> bool:
    m = _SCRATCH.search(scratch.name)
    if m is None:
        return True  # not ours to judge
    try:
        os.kill(int(m[1]), 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # another user's process
    return True


def _size(entry: Path) -> int:
    if entry.is_dir() and not entry.is_symlink():
        return sum(p.stat().st_size for p in entry.rglob("*") if p.is_file() and not p.is_symlink())
    return entry.stat().st_size


def du(cache: Cache) -> Usage:
    usage = Usage()
    for directory, is_blob in ((cache.blobs, True), (cache.tmp, False)):
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            try:
                size = _size(entry)
            except FileNotFoundError:
                continue
            if is_blob:
                usage.blobs, usage.bytes = usage.blobs + 1, usage.bytes + size
            else:
                usage.partials, usage.partial_bytes = usage.partials + 1, usage.partial_bytes + size
    return usage


def referenced(manifest_paths: list[Path]) -> set[str]:
    """Digests every given manifest's lock needs."""
    keep: set[str] = set()
    for path in manifest_paths:
        if not path.is_file():
            raise UsageError(f"{path}: no such manifest (prune keeps what the locks of -m and --keep reference)")
        manifest = manifests.load(path)
        lock = lockfile.read(lockfile.lock_path_for(path))
        if lock is None or not lock.matches(manifest):
            raise UsageError(f"{path}: no up-to-date models.lock beside it; run `seeder lock -m {path}` first")
        keep |= {f.digest for m in lock.models for f in m.files}
    return keep


def prune(cache: Cache, keep: set[str], keep_days: float | None) -> Usage:
    """Delete unreferenced blobs (older than ``keep_days`` when given) and stale partials; returns what went."""
    removed = Usage()
    cutoff = time.time() - keep_days * 86400 if keep_days is not None else None
    for directory, is_blob in ((cache.blobs, True), (cache.tmp, False)):
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                if not is_blob and not _alive(entry):  # a layer unpacked by a run that was killed
                    size = _size(entry)
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.partials, removed.partial_bytes = removed.partials + 1, removed.partial_bytes + size
                continue
            digest = entry.name.split(".", 1)[0]
            try:
                st = entry.stat()
            except FileNotFoundError:  # a download finished or another prune got there first
                continue
            if digest in keep or (cutoff is not None and st.st_mtime > cutoff):
                continue
            # The same per-blob lock a download holds, so nothing in flight is deleted.
            with cache.exclusive(digest):
                entry.unlink(missing_ok=True)
            if is_blob:
                removed.blobs, removed.bytes = removed.blobs + 1, removed.bytes + st.st_size
            else:
                removed.partials, removed.partial_bytes = removed.partials + 1, removed.partial_bytes + st.st_size
    return removed
