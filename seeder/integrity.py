"""What bytes must hash to: the digests a locked file is checked against, fed once per byte.

Both sides use it: the download engine (:mod:`seeder.fetch`) hashes while bytes arrive, and the
checker (:mod:`seeder.store.verify`, the app's start-up check) hashes what is on disk. It lives
outside ``fetch/`` so that checking a target never imports the download engine.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from .spec.lock import LockedFile

CHUNK = 1 << 20


class ContentMismatch(Exception):
    """The bytes are wrong (size or digest): whatever holds them is discarded."""


class Hasher:
    """The digests a file is checked against, fed once per byte."""

    def __init__(self, file: LockedFile):
        self.file = file
        self.sha256 = hashlib.sha256()
        self.git = None
        if file.git_oid:
            self.git = hashlib.sha1(b"blob %d\0" % file.size)

    def update(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        if self.git is not None:
            self.git.update(data)

    def check(self) -> str:
        actual = self.sha256.hexdigest()
        if self.file.sha256 and actual != self.file.sha256:
            raise ContentMismatch(f"sha256 {actual}, expected {self.file.sha256}")
        if self.git is not None and self.git.hexdigest() != self.file.git_oid:
            raise ContentMismatch(f"git blob id {self.git.hexdigest()}, expected {self.file.git_oid}")
        return actual


class HashingReader(io.RawIOBase):
    """A file as read by someone else (tarfile, a decompressor), every byte fed once to ``hasher`` (a
    :class:`Hasher`, or any object with ``update``) on its way: one read, hashed and consumed."""

    def __init__(self, fh, hasher):
        self.fh, self.hasher = fh, hasher

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.fh.readinto(buffer)
        self.hasher.update(memoryview(buffer)[:n])
        return n


def hash_file(path: Path, file: LockedFile, limit: int | None = None) -> Hasher:
    """Hash ``path`` (its first ``limit`` bytes), reading into one reused buffer (hashlib releases the GIL)."""
    hasher = Hasher(file)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        try:
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)  # larger read-ahead from disk
        except (AttributeError, OSError):
            pass
        remaining = limit
        while remaining is None or remaining > 0:
            n = fh.readinto(view if remaining is None or remaining >= CHUNK else view[:remaining])
            if not n:
                break
            hasher.update(view[:n])
            if remaining is not None:
                remaining -= n
    return hasher
