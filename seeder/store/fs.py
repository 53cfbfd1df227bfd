"""Filesystem steps every store shares: durable atomic writes, stamps, flock, storage errors."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from .. import failpoints, log
from ..errors import StorageError

WAIT_LOG_EVERY = 5.0  # seconds between "waiting for another seeder" lines

Stamp = tuple[int, int, int]
"""(size, mtime_ns, inode): a file that still carries its stamp was not replaced or rewritten."""


@contextmanager
def flocked(path: Path, waiting: str | None = None):
    """Hold an exclusive ``flock`` on ``path`` (created if missing), waiting for it as long as it takes,
    and saying so (``waiting``: what to log, at once and every few seconds) when someone else has it.

    The kernel releases it when the process dies, so a killed seeder never leaves a stale one. The
    file itself stays: removing it would let two processes each hold "the" flock on different inodes.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise storage_error(e, "lock", path) from None
    try:
        _wait_for(fd, waiting)
        yield
    finally:
        os.close(fd)


def _wait_for(fd: int, waiting: str | None) -> None:
    if waiting is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    started = said = time.monotonic()
    first = True
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            now = time.monotonic()
            if first or now - said >= WAIT_LOG_EVERY:
                log.info(waiting, waited=round(now - started, 1))
                first, said = False, now
            time.sleep(0.05)


def storage_error(e: OSError, action: str, path: Path | str) -> StorageError:
    reasons = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}
    return StorageError(f"cannot {action} {path}: {reasons.get(e.errno, e.strerror or str(e))}")


def regular_or_absent(path: Path) -> None:
    """Remove whatever is at ``path`` unless it is a regular file: a planted symlink must not redirect writes."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    except OSError as e:
        raise storage_error(e, "inspect", path) from None
    if not stat.S_ISREG(st.st_mode):
        try:
            path.unlink()
        except OSError as e:
            raise storage_error(e, "remove", path) from None


def copy_hashed(source: BinaryIO, dest: Path, hasher) -> None:
    """Copy a stream into a new file, feeding every block to ``hasher``, and make it durable."""
    with open(dest, "wb") as out:
        while block := source.read(1 << 20):
            hasher.update(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        failpoints.hit(f"before-rename:{path.name}")
        os.replace(tmp, path)
    except OSError as e:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise storage_error(e, "write", path) from None
    fsync_dir(path.parent)


def stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def same_device(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are on one filesystem (a hardlink can join them); False if either is unreadable."""
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False
