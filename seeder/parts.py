"""Multi-connection downloads: one large file fetched as ``Range`` parts over parallel connections.

The partial file is preallocated to the full size and every part is written in
place (``os.pwrite``), so nothing is buffered beyond one read per connection.
Which byte ranges are on disk is recorded in a small sidecar next to the
partial (``<digest>.part.ranges``, JSON, rewritten at most every
:data:`SAVE_EVERY` seconds and when the download stops), so a killed process
resumes every part where it stopped. The sidecar never claims more than has
been written: ranges are recorded after their bytes went to the file.

Hashing costs no second pass: parts are handed out in file order, so the
completed bytes form a contiguous prefix that grows behind the downloads; the
coordinating thread advances sha256 (and the git blob sha1, when the lock has
one) over that prefix as it grows, reading it back from the page cache.

Invariants shared with :mod:`seeder.transfer`:

* a partial without a sidecar is a plain prefix of the file (the single-stream
  layout), so either path can take over the other's partial;
* the sidecar is written before the partial grows past what it records;
* nothing is ever written outside ``[0, file.size)``.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections import deque
from pathlib import Path

from . import log, transfer, transport
from .errors import RemoteError, SeederError, StorageError
from .lock import LockedFile

SIDECAR_SUFFIX = ".ranges"
SIDECAR_VERSION = 1
READ = 256 << 10  # one network read per connection in flight: bounded memory
HASH_BLOCK = 4 << 20
MIN_PIECE = 1 << 20  # the smallest piece: of the first round, and near the end
STEAL_MIN = 2 << 20  # an idle connection takes over half of a part that has at least twice this left,
STALLED = 1.0  # and that has not moved for this many seconds: each take-over costs the bytes the old
# connection already had in flight, so a merely slower connection is left to finish its part
SAVE_EVERY = 0.5  # seconds between sidecar writes
FLUSH_EVERY = 0.1  # seconds between fdatasync calls that keep dirty pages (and the final fsync) small
POLL = 0.05
TAIL = 2  # near the end, pieces shrink to 1/(TAIL × connections) of what is left


class NoRanges(Exception):
    """The server does not honour ``Range`` (answers 200 with the whole body): use one stream."""


class _Stopped(Exception):
    """Another part failed; this worker stops without an error of its own."""


def sidecar(part: Path) -> Path:
    return part.with_name(part.name + SIDECAR_SUFFIX)


def _merge(intervals) -> list[list[int]]:
    out: list[list[int]] = []
    for a, b in sorted(intervals):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _prefix_end(intervals: list[list[int]]) -> int:
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
    return _merge((max(0, a), min(b, limit)) for a, b in ranges)


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


def adopt_prefix(part: Path, file: LockedFile, have: int) -> int:
    """Make a multi-part partial a single-stream one: keep its contiguous head; returns its length."""
    side = sidecar(part)
    if not side.exists():
        return have
    ranges = load_ranges(part, file, have) or []
    keep = _prefix_end(ranges)
    try:
        os.truncate(part, keep)  # before the sidecar goes: without it, the partial must be a plain prefix
    except FileNotFoundError:
        keep = 0
    except OSError as e:
        raise StorageError(f"cannot write {part}: {e.strerror}") from None
    side.unlink(missing_ok=True)
    return keep


class _Span:
    """One piece in flight: bytes ``[start, pos)`` are written, ``[pos, end)`` are still to come.

    ``[pos, claimed)`` is being written right now; an idle connection may take over ``[mid, end)`` for
    any ``mid >= claimed`` (it lowers ``end``), so the owner must re-read ``end`` before each write.
    """

    __slots__ = ("start", "pos", "end", "claimed", "moved")

    def __init__(self, start: int, end: int):
        self.start = self.pos = self.claimed = start
        self.end = end
        self.moved = time.monotonic()


class PartedDownload:
    """One file, several connections. :meth:`run` returns when the file is complete and verified."""

    def __init__(self, client: transfer.Client, url: str, part: Path, file: LockedFile, progress, model: str):
        self.client, self.net = client, client.net
        self.origin = url
        self.effective: str | None = None  # where the hub's redirect led: parts go straight there
        self.part, self.file, self.progress, self.model = part, file, progress, model
        self.size = file.size
        self.piece = max(1, self.net.part_size)
        self.min_piece = min(self.piece, MIN_PIECE)
        self.steal_min = min(self.piece, STEAL_MIN)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stop = threading.Event()
        self.ranges_ok = threading.Event()
        self.done: list[list[int]] = []
        self.active: set[_Span] = set()
        self.todo: deque[list[int]] = deque()
        self.unassigned = 0
        self.handed = 0  # pieces handed out so far
        self.fetched = 0
        self.errors: list[BaseException] = []
        self.arrived: float | None = None
        self.fd = -1
        self.workers = 1

    # -- setup --

    def _prepare(self) -> None:
        part, file = self.part, self.file
        try:
            on_disk = part.stat().st_size
        except FileNotFoundError:
            on_disk = 0
        has_sidecar = sidecar(part).exists()
        ranges = load_ranges(part, file, on_disk) if has_sidecar else None
        keep = None  # length to cut the partial to before growing it (None: keep as is)
        if ranges is None:
            # No (usable) sidecar: the partial is a plain prefix, unless it is too long or of unknown layout.
            trusted = not has_sidecar and on_disk <= file.size
            head = on_disk if trusted else 0
            ranges = [[0, head]] if head else []
            keep = head
        self.done = ranges
        save_ranges(part, file, ranges)  # on disk before the partial grows past a plain prefix
        try:
            self.fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StorageError(f"cannot write {part}: {e.strerror}") from None
        try:
            if keep is not None and keep != on_disk:
                os.ftruncate(self.fd, keep)
            _preallocate(self.fd, self.size)
        except OSError as e:
            os.close(self.fd)
            self.fd = -1
            raise StorageError(f"cannot write {part}: {e.strerror}") from None
        have = 0
        cursor = 0
        for a, b in ranges:
            if a > cursor:
                self.todo.append([cursor, a])
            have += b - a
            cursor = b
        if cursor < self.size:
            self.todo.append([cursor, self.size])
        self.unassigned = self.size - have
        self.resumed = have
        pieces = -(-self.unassigned // self.min_piece)
        self.workers = max(1, min(self.net.connections, pieces))

    # -- work distribution (under self.lock) --

    def _take(self) -> _Span | None:
        """The next piece in file order (so the hashed prefix keeps up), or half of the slowest one's rest."""
        with self.lock:
            while not self.todo:
                # Idle: wait for a part to stall (then take over half of it) or for all to finish.
                if self.stop.is_set() or not self.active:
                    return None
                if (span := self._steal()) is not None:
                    return span
                self.changed.wait(STALLED / 4)
            if self.stop.is_set():
                return None
            head = self.todo[0]
            # The first round grows from 1/n of a piece to a whole one, so the connections finish their
            # pieces one after another, in file order: the hashed prefix then advances steadily, and little
            # is left to hash when the last byte arrives.
            want = min(self.piece, max(self.min_piece, self.unassigned // (TAIL * self.workers)))
            if self.handed < self.workers:
                want = max(self.min_piece, self.piece * (self.handed + 1) // self.workers)
            self.handed += 1
            length = min(want, head[1] - head[0])
            span = _Span(head[0], head[0] + length)
            head[0] += length
            if head[0] >= head[1]:
                self.todo.popleft()
            self.unassigned -= length
            self.active.add(span)
            return span

    def _steal(self) -> _Span | None:
        # Nothing left to hand out: split the part with the most left (the newest, or a slow or stalled
        # connection's), so all connections stay busy to the end.
        stalled = time.monotonic() - STALLED
        victim = max((s for s in self.active if s.moved < stalled), key=lambda s: (s.end - s.claimed, s.start),
                     default=None)
        if victim is None or victim.end - victim.claimed < 2 * self.steal_min:
            return None
        mid = victim.claimed + (victim.end - victim.claimed) // 2
        span = _Span(mid, victim.end)
        victim.end = mid
        self.active.add(span)
        return span

    def _finish(self, span: _Span) -> None:
        with self.changed:
            self.active.discard(span)
            self.done = _merge([*self.done, [span.start, span.end]])
            if not self.todo and not self.active:
                self.arrived = time.monotonic()  # the last byte is in
            self.changed.notify_all()

    def _snapshot(self) -> list[list[int]]:
        with self.lock:
            return _merge([*self.done, *([s.start, s.pos] for s in self.active)])

    # -- workers --

    def _worker(self) -> None:
        session = self.client.new_session()
        try:
            while True:
                span = self._take()
                if span is None:
                    return
                self._fetch(session, span)
                self._finish(span)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the coordinator, which raises it
            with self.changed:
                self.errors.append(e)
                self.stop.set()
                self.changed.notify_all()
        finally:
            session.close()
            with self.changed:
                self.changed.notify_all()

    def _fetch(self, session: transport.AnySession, span: _Span) -> None:
        attempt = 0
        while span.pos < span.end:
            if self.stop.is_set():
                raise _Stopped
            try:
                self._request(session, span)
                continue
            except transfer.TransientError as e:
                error = e
            except RemoteError as e:
                if self.effective is None:
                    raise
                # A signed redirect target may expire during a long download: go back through the origin.
                error, self.effective = transfer.TransientError(str(e)), None
            attempt += 1
            if attempt >= self.net.retries:
                raise error
            wait = transfer.backoff(self.net, attempt, error.retry_after)
            log.warning("retrying", what="download part", model=self.model, file=self.file.path, attempt=attempt,
                        offset=span.pos, error=str(error), wait=round(wait, 2))
            if self.stop.wait(wait):
                raise _Stopped

    def _request(self, session: transport.AnySession, span: _Span) -> None:
        url = self.effective or self.origin
        resp = self.client.request("GET", url, headers={"Range": f"bytes={span.pos}-{span.end - 1}"},
                                   session=session)
        with resp:
            status = resp.status_code
            if status == 200:
                raise NoRanges(f"HTTP 200 to a Range request from {transfer._safe(url)}")
            if status == 416:
                raise transfer.ContentMismatch(f"server refused bytes {span.pos}-{span.end - 1}: "
                                               f"the file is shorter than the expected {self.size} bytes")
            transfer.classify(resp, url)
            if status != 206:
                raise RemoteError(f"HTTP {status} to a Range request from {transfer._safe(url)}")
            first, last, total = _content_range(resp.headers.get("Content-Range"))
            if first is None:
                raise NoRanges("206 without a usable Content-Range")
            if total is not None and total != self.size:
                raise transfer.ContentMismatch(f"server has {total} bytes, expected {self.size}")
            if first != span.pos or last < first:
                raise transfer.TransientError(f"server sent bytes {first}-{last} for a request of "
                                              f"{span.pos}-{span.end - 1}")
            if resp.redirected and self.effective is None:
                self.effective = resp.url
            if not self.ranges_ok.is_set():
                with self.changed:  # wake the coordinator: it starts the other connections now
                    self.ranges_ok.set()
                    self.changed.notify_all()
            served = last + 1  # never past what we asked for (so never past the file's end)
            try:
                for chunk in resp.chunks(READ):
                    with self.lock:  # another connection may have taken over the end of this part
                        n = max(0, min(len(chunk), span.end - span.pos, served - span.pos))
                        span.claimed = span.pos + n
                    _pwrite_all(self.fd, memoryview(chunk)[:n], span.pos, self.part)
                    with self.lock:
                        span.pos += n
                        span.moved = time.monotonic()
                        self.fetched += n
                        self.progress.update(n)
                    if span.pos >= min(span.end, served) or self.stop.is_set():
                        break  # an unread rest closes the connection: the next request opens another
            except transfer.TransientError as e:
                raise transfer.TransientError(f"{e} at byte {span.pos}") from None
            if span.pos < min(span.end, served) and not self.stop.is_set():
                raise transfer.TransientError(f"connection closed at byte {span.pos} of part "
                                              f"{span.start}-{span.end - 1}")

    # -- coordination --

    def run(self) -> transfer.Downloaded:
        self._prepare()
        threads: list[threading.Thread] = []
        flusher = threading.Thread(target=self._flush_loop, name="seeder-flush", daemon=True)
        ok = False
        try:
            self.progress.resumed_at(self.resumed)
            hasher = transfer.Hasher(self.file)
            hashed = 0
            buf = bytearray(HASH_BLOCK)
            view = memoryview(buf)
            log.debug("parts", model=self.model, file=self.file.path, connections=self.workers,
                      part_size=self.piece, resumed=self.resumed)
            if self.unassigned:
                threads.append(self._spawn())
                flusher.start()
            last_save = began = time.monotonic()
            while True:
                with self.changed:
                    if not self.errors:
                        self.changed.wait(POLL)
                    if self.errors:
                        break
                    finished = not self.todo and not self.active
                if len(threads) < self.workers and self.ranges_ok.is_set():
                    threads.extend(self._spawn() for _ in range(self.workers - len(threads)))
                # Hash what is contiguous from the start: it was just written, so it is in the page cache.
                end = _prefix_end(self._snapshot())
                while hashed < end and not self.errors:
                    n = _pread_into(self.fd, view[: min(HASH_BLOCK, end - hashed)], hashed, self.part)
                    hasher.update(view[:n])
                    hashed += n
                if finished:
                    break
                now = time.monotonic()
                if now - last_save >= SAVE_EVERY:
                    save_ranges(self.part, self.file, self._snapshot())
                    last_save = now
            if self.errors:
                raise self._first_error()
            if hashed != self.size:
                raise transfer.ContentMismatch(f"only {hashed} of {self.size} bytes arrived")
            sha256 = hasher.check()  # ContentMismatch: download() discards the partial and starts over once
            hashed_at = time.monotonic()
            self.stop.set()
            if flusher.is_alive():
                flusher.join()
            try:
                os.fsync(self.fd)
            except OSError as e:
                raise StorageError(f"cannot write {self.part}: {e.strerror}") from None
            now = time.monotonic()
            log.debug("parts done", model=self.model, file=self.file.path, seconds=round(now - began, 3),
                      hash_after_last_byte=round(hashed_at - (self.arrived or began), 3),
                      fsync=round(now - hashed_at, 3))
            ok = True
            return transfer.Downloaded(sha256=sha256, fetched=self.fetched)
        finally:
            self.stop.set()
            for t in threads:
                t.join()
            if flusher.is_alive():
                flusher.join()
            os.close(self.fd)
            if ok:
                # Complete and verified: without a sidecar the partial reads as a finished plain prefix.
                sidecar(self.part).unlink(missing_ok=True)
            elif self.part.exists():
                save_ranges(self.part, self.file, self._snapshot())

    def _spawn(self) -> threading.Thread:
        t = threading.Thread(target=self._worker, name="seeder-part", daemon=True)
        t.start()
        return t

    def _flush_loop(self) -> None:
        # Start writeback while downloading, so the fsync before the rename finds little left to write.
        while not self.stop.wait(FLUSH_EVERY):
            try:
                os.fdatasync(self.fd)
            except OSError:
                return

    def _first_error(self) -> BaseException:
        order = (transfer.ContentMismatch, StorageError, NoRanges, SeederError, transfer.TransientError)
        for kind in order:
            for e in self.errors:
                if isinstance(e, kind):
                    return e
        return self.errors[0]


def download(client: transfer.Client, url: str, part: Path, file: LockedFile, progress, model: str
             ) -> transfer.Downloaded:
    """Fetch ``file`` from ``url`` into ``part`` over up to ``client.net.connections`` connections.

    Raises :class:`NoRanges` when the server ignores ``Range`` (the partial is then
    left as a plain prefix for the single-stream path), ``TransientError`` when a
    part ran out of retries (progress is kept for the next attempt), and
    ``ContentMismatch`` on a size or digest mismatch.
    """
    job = PartedDownload(client, url, part, file, progress, model)
    try:
        return job.run()
    except NoRanges:
        try:
            have = part.stat().st_size
        except FileNotFoundError:
            have = 0
        adopt_prefix(part, file, have)
        raise


def _content_range(value: str | None) -> tuple[int | None, int, int | None]:
    """``bytes first-last/total`` -> (first, last, total or None); (None, 0, None) if unusable."""
    try:
        unit, rest = (value or "").split(None, 1)
        span, total = rest.split("/", 1)
        first, last = span.split("-", 1)
        if unit.lower() != "bytes":
            raise ValueError
        return int(first), int(last), None if total.strip() == "*" else int(total)
    except ValueError:
        return None, 0, None


def _preallocate(fd: int, size: int) -> None:
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


def _pwrite_all(fd: int, data: memoryview, offset: int, part: Path) -> None:
    while data:
        try:
            n = os.pwrite(fd, data, offset)
        except OSError as e:
            raise StorageError(f"cannot write {part}: {e.strerror}") from None
        data = data[n:]
        offset += n


def _pread_into(fd: int, view: memoryview, offset: int, part: Path) -> int:
    try:
        n = os.preadv(fd, [view], offset)
    except OSError as e:
        raise StorageError(f"cannot read {part}: {e.strerror}") from None
    if n <= 0:
        raise StorageError(f"cannot read {part}: it is shorter than expected")
    return n
