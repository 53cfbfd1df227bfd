"""The local content-addressed cache: ``blobs/<digest>`` holds exactly the bytes with that digest.

Shared across targets and builds (a BuildKit cache mount). A blob's name is what it should hash to,
not proof: the installer hashes a blob it did not just download on its way into a target.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

from ..spec.lock import LockedFile
from .fs import flocked, stamp, storage_error


class LocalCache(Protocol):
    """What the install chain asks of a local cache kind. Only a ``writable`` one is seeder's own: downloads
    land there and targets may hardlink its blobs. The others belong to someone else: read and copied
    from, never changed (their ``discard`` only forgets a damaged file)."""

    root: Path
    writable: bool

    def has(self, file: LockedFile) -> bool: ...

    def blob(self, file: LockedFile) -> Path: ...

    def discard(self, file: LockedFile) -> None: ...


class Cache:
    writable = True

    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self.flocks = root / "locks"  # one flock file per digest: one writer per blob

    def ensure(self) -> None:
        for d in (self.blobs, self.tmp, self.flocks):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise storage_error(e, "create", d) from None

    def blob(self, file: LockedFile) -> Path:
        return self.blobs / file.digest

    def has(self, file: LockedFile) -> bool:
        st = stamp(self.blob(file))
        return st is not None and st[0] == file.size

    def exclusive(self, digest: str):
        return flocked(self.flocks / f"{digest}.lock")

    def discard(self, file: LockedFile) -> None:
        with self.exclusive(file.digest):
            self.blob(file).unlink(missing_ok=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free


class ReadOnlyCache:
    """Someone else's files, found by content through an index a subclass lists (``_list``) on first use,
    so a warm run never opens it. A damaged file is only forgotten: the next source is tried."""

    writable = False

    def __init__(self, root: Path):
        self.root = root
        self._index: dict[str, Path] | None = None

    def _list(self) -> dict[str, Path]:
        """Digest -> a file that should hold those bytes."""
        raise NotImplementedError

    def _paths(self) -> dict[str, Path]:
        if self._index is None:
            self._index = self._list()
        return self._index

    def has(self, file: LockedFile) -> bool:
        path = self._paths().get(file.digest)
        st = stamp(path) if path else None
        return st is not None and st[0] == file.size

    def blob(self, file: LockedFile) -> Path:
        return self._paths()[file.digest]

    def discard(self, file: LockedFile) -> None:
        self._paths().pop(file.digest, None)
