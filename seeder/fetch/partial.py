"""The partial file: where a download's bytes wait until they are complete and verified.

A partial lives at ``<tmp>/<digest>.part`` and only ever holds bytes of the expected content:
either a plain prefix (the single-stream layout), or, for a multi-part download, the byte ranges
recorded in a sidecar beside it (``<digest>.part.ranges``, JSON). Either path can take over the
other's partial. The sidecar never claims more than has been written, is written before the
partial grows past a plain prefix, and nothing is written outside ``[0, size)``. The caller renames
the partial into place only once size and digest are right.
"""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import StorageError
from ..spec.lock import LockedFile

SIDECAR_SUFFIX = ".ranges"
SIDECAR_VERSION = 1
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)  # digits only: int() would take signs, "_"


@dataclass(frozen=True)
class Downloaded:
    sha256: str
    fetched: int
    """Bytes received over the network in this call (resumed bytes excluded)."""


def partial_path(tmp: Path, file: LockedFile) -> Path:
    return tmp / f"{file.digest}.part"


def sidecar(part: Path) -> Path:
    return part.with_name(part.name + SIDECAR_SUFFIX)


def discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    sidecar(part).unlink(missing_ok=True)


def size_on_disk(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def merge(intervals) -> list[list[int]]:
    out: list[list[int]] = []
    for a, b in sorted(intervals):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def prefix_end(intervals: list[list[int]]) -> int:
    return intervals[0][1] if intervals and intervals[0][0] == 0 else 0


def load_ranges(part: Path, file: LockedFile, on_disk: int) -> list[list[int]] | None:
    """The byte ranges a sidecar says are in ``part``, clipped to what the partial holds; None if unusable."""
    try:
        data = json.loads(sidecar(part).read_text("utf-8"))
        if data.get("version") != SIDECAR_VERSION or data.get("size") != file.size or data.get("digest") != file.digest:
            return None
        ranges = [[int(a), int(b)] for a, b in data["done"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    limit = min(on_disk, file.size)
    return merge((max(0, a), min(b, limit)) for a, b in ranges)


def kept_ranges(part: Path, file: LockedFile, on_disk: int) -> tuple[list[list[int]], int | None]:
    """What a multi-part download keeps of ``part``: its ranges, and the length to cut it to first (None:
    as is). Without a usable sidecar the partial is a plain prefix, unless too long or of unknown layout."""
    has_sidecar = sidecar(part).exists()
    ranges = load_ranges(part, file, on_disk) if has_sidecar else None
    if ranges is not None:
        return ranges, None
    head = on_disk if not has_sidecar and on_disk <= file.size else 0
    return ([[0, head]] if head else []), head


def gaps(ranges: list[list[int]], size: int) -> list[list[int]]:
    """The byte ranges of ``[0, size)`` that ``ranges`` (merged, sorted) do not cover."""
    out, cursor = [], 0
    for a, b in ranges:
        if a > cursor:
            out.append([cursor, a])
        cursor = b
    if cursor < size:
        out.append([cursor, size])
    return out


def save_ranges(part: Path, file: LockedFile, ranges: list[list[int]]) -> None:
    """Record ``ranges`` atomically (write, rename). No fsync: the digest catches what a power cut loses."""
    side = sidecar(part)
    tmp = side.with_name(side.name + ".tmp")
    data = json.dumps({"version": SIDECAR_VERSION, "size": file.size, "digest": file.digest, "done": ranges})
    try:
        tmp.write_text(data, "utf-8")
        os.replace(tmp, side)
    except OSError as e:
        raise StorageError(f"cannot write {side}: {e.strerror}") from None


def adopt_prefix(part: Path, file: LockedFile) -> int:
    """Make any partial a single-stream one: keep its contiguous head; returns its length."""
    have = size_on_disk(part)
    side = sidecar(part)
    if not side.exists():
        return have
    keep = prefix_end(load_ranges(part, file, have) or [])
    try:
        os.truncate(part, keep)  # before the sidecar goes: without it, the partial must be a plain prefix
    except FileNotFoundError:
        keep = 0
    except OSError as e:
        raise StorageError(f"cannot write {part}: {e.strerror}") from None
    side.unlink(missing_ok=True)
    return keep


def content_range(value: str | None) -> tuple[int | None, int, int | None]:
    """``bytes first-last/total`` -> (first, last, total or None); (None, 0, None) if unusable."""
    m = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not m:
        return None, 0, None
    return int(m[1]), int(m[2]), None if m[3] == "*" else int(m[3])


def open_partial(part: Path) -> int:
    try:
        return os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StorageError(f"cannot write {part}: {e.strerror}") from None


def preallocate(fd: int, size: int) -> None:
    if size == 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise
        os.ftruncate(fd, size)  # the filesystem cannot preallocate: a sparse file works the same
    except AttributeError:  # pragma: no cover - not on Linux
        os.ftruncate(fd, size)


def write_at(fd: int, data: bytes | memoryview, offset: int, part: Path) -> None:
    """Write all of ``data`` at ``offset``: the one write loop of both download paths."""
    view = memoryview(data)
    while view:
        try:
            n = os.pwrite(fd, view, offset)
        except OSError as e:
            raise StorageError(f"cannot write {part}: {e.strerror}") from None
        view = view[n:]
        offset += n


def read_at(fd: int, view: memoryview, offset: int, part: Path) -> int:
    try:
        n = os.preadv(fd, [view], offset)
    except OSError as e:
        raise StorageError(f"cannot read {part}: {e.strerror}") from None
    if n <= 0:
        raise StorageError(f"cannot read {part}: it is shorter than expected")
    return n
