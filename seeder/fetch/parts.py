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

The partial's invariants, shared with :mod:`.stream`, are in :mod:`.partial`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import log
from ..errors import RemoteError, SeederError, StorageError, TransientError
from ..integrity import ContentMismatch, Hasher
from ..spec.lock import LockedFile
from .partial import (Downloaded, adopt_prefix, content_range, kept_ranges, open_partial, preallocate, prefix_end,
                      read_at, save_ranges, sidecar, size_on_disk, write_at)
from .retry import classify, honour, retrying
from .schedule import Schedule, Span
from .transport import Client, safe

if TYPE_CHECKING:
    from .transport import AnySession

READ = 256 << 10  # one network read per connection in flight: bounded memory
HASH_BLOCK = 4 << 20
SAVE_EVERY = 0.5  # seconds between sidecar writes
FLUSH_EVERY = 0.1  # seconds between fdatasync calls that keep dirty pages (and the final fsync) small
POLL = 0.05


_RUNNING: set[PartedDownload] = set()  # what an interrupted run records before it exits
_RUNNING_LOCK = threading.Lock()


def save_running() -> None:
    """Record what every download in progress has on disk. The CLI calls this on SIGINT/SIGTERM, then
    exits without waiting for the threads, which would have saved it only every SAVE_EVERY seconds."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for d in running:
        try:
            d.save()
        except (OSError, SeederError):
            pass  # exiting anyway: the sidecar saved last is still true, only shorter


class NoRanges(Exception):
    """The server does not honour ``Range`` (answers 200 with the whole body): use one stream."""


class _Stopped(Exception):
    """Another part failed; this worker stops without an error of its own."""


class PartedDownload:
    """One file, several connections. :meth:`run` returns when the file is complete and verified."""

    def __init__(self, client: Client, url: str, part: Path, file: LockedFile, progress, model: str):
        self.client, self.net, self.settings = client, client.net, client.parts
        self.origin = url
        self.effective: str | None = None  # where the hub's redirect led: parts go straight there
        self.part, self.file, self.progress, self.model = part, file, progress, model
        self.size = file.size
        self.stop = threading.Event()
        self.ranges_ok = threading.Event()
        self.fetched = 0
        self.errors: list[BaseException] = []
        self.fd = -1
        self.saving = threading.Lock()

    def _prepare(self) -> None:
        part, file = self.part, self.file
        on_disk = size_on_disk(part)
        ranges, keep = kept_ranges(part, file, on_disk)
        save_ranges(part, file, ranges)  # on disk before the partial grows past a plain prefix
        self.fd = open_partial(part)
        try:
            if keep is not None and keep != on_disk:
                os.ftruncate(self.fd, keep)
            preallocate(self.fd, self.size)
        except OSError as e:
            os.close(self.fd)
            self.fd = -1
            raise StorageError(f"cannot write {part}: {e.strerror}") from None
        self.plan = Schedule(self.size, self.settings.part_size, self.settings.connections, ranges)
        self.mutex, self.changed = self.plan.mutex, self.plan.changed

    # -- workers --

    def _worker(self) -> None:
        session = self.client.new_session()
        try:
            while True:
                span = self.plan.take(self.stop)
                if span is None:
                    return
                self._fetch(session, span)
                self.plan.finish(span)
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

    def _fetch(self, session: AnySession, span: Span) -> None:
        for attempt in retrying(self.net, "download part", self.model, self.file.path, sleep=self._sleep,
                                offset=lambda: span.pos):
            with attempt:
                while span.pos < span.end:  # a server may send less than a part: ask again for the rest
                    if self.stop.is_set():
                        raise _Stopped
                    url = self.effective or self.origin
                    try:
                        self._request(session, span, url)
                    except RemoteError as e:
                        if url == self.origin:
                            raise
                        # A signed redirect target may expire during a long download: go back through the
                        # origin. Several parts may meet the expiry at once; each one that used it does.
                        if self.effective == url:
                            self.effective = None
                        raise TransientError(str(e)) from None

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise _Stopped

    def _request(self, session: AnySession, span: Span, url: str) -> None:
        honour(url, self._sleep)  # another part was told to come back later: this one waits as long
        resp = self.client.request("GET", url, headers={"Range": f"bytes={span.pos}-{span.end - 1}"},
                                   session=session)
        with resp:
            status = resp.status_code
            if status == 200:
                raise NoRanges(f"HTTP 200 to a Range request from {safe(url)}")
            if status == 416:
                raise ContentMismatch(f"server refused bytes {span.pos}-{span.end - 1}: "
                                               f"the file is shorter than the expected {self.size} bytes")
            classify(resp, url, self.net)
            if status != 206:
                raise RemoteError(f"HTTP {status} to a Range request from {safe(url)}")
            first, last, total = content_range(resp.headers.get("Content-Range"))
            if first is None:
                raise NoRanges("206 without a usable Content-Range")
            if total is not None and total != self.size:
                raise ContentMismatch(f"server has {total} bytes, expected {self.size}")
            if first != span.pos or last < first:
                raise TransientError(f"server sent bytes {first}-{last} for a request of "
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
                    with self.mutex:  # another connection may have taken over the end of this part
                        n = max(0, min(len(chunk), span.end - span.pos, served - span.pos))
                        span.claimed = span.pos + n
                    write_at(self.fd, memoryview(chunk)[:n], span.pos, self.part)
                    with self.mutex:
                        span.pos += n
                        span.moved = time.monotonic()
                        self.fetched += n
                        self.progress.update(n)
                    if span.pos >= min(span.end, served) or self.stop.is_set():
                        break  # an unread rest closes the connection: the next request opens another
            except TransientError as e:
                raise TransientError(f"{e} at byte {span.pos}") from None
            if span.pos < min(span.end, served) and not self.stop.is_set():
                raise TransientError(f"connection closed at byte {span.pos} of part "
                                              f"{span.start}-{span.end - 1}")

    def save(self) -> None:
        # The coordinator and, on a signal, the main thread: one writer at a time through the sidecar's temp file.
        with self.saving:
            save_ranges(self.part, self.file, self.plan.snapshot())

    # -- coordination --

    def run(self) -> Downloaded:
        self._prepare()
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        self.threads: list[threading.Thread] = []
        self.flusher = threading.Thread(target=self._flush_loop, name="seeder-flush", daemon=True)
        ok = False
        try:
            self.progress.resumed_at(self.plan.resumed)
            log.debug("parts", model=self.model, file=self.file.path, connections=self.plan.workers,
                      part_size=self.plan.piece, resumed=self.plan.resumed)
            if self.plan.unassigned:
                self.threads.append(self._spawn())
                self.flusher.start()
            began = time.monotonic()
            hasher = self._coordinate()
            sha256 = hasher.check()  # ContentMismatch: the dispatcher discards the partial and starts over once
            self._durable(began)
            ok = True
            return Downloaded(sha256=sha256, fetched=self.fetched)
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(self)
            self.stop.set()
            for t in self.threads:
                t.join()
            if self.flusher.is_alive():
                self.flusher.join()
            os.close(self.fd)
            if ok:
                # Complete and verified: without a sidecar the partial reads as a finished plain prefix.
                sidecar(self.part).unlink(missing_ok=True)
            elif self.part.exists():
                self.save()

    def _coordinate(self) -> Hasher:
        """Start connections once ranges work, hash the growing prefix, save the sidecar; until all arrived."""
        hasher = Hasher(self.file)
        hashed = 0
        view = memoryview(bytearray(HASH_BLOCK))
        last_save = time.monotonic()
        while True:
            with self.changed:
                if not self.errors:
                    self.changed.wait(POLL)
                if self.errors:
                    raise self._first_error()
                finished = self.plan.finished
            if len(self.threads) < self.plan.workers and self.ranges_ok.is_set():
                self.threads.extend(self._spawn() for _ in range(self.plan.workers - len(self.threads)))
            # Hash what is contiguous from the start: it was just written, so it is in the page cache.
            end = prefix_end(self.plan.snapshot())
            while hashed < end and not self.errors:
                n = read_at(self.fd, view[: min(HASH_BLOCK, end - hashed)], hashed, self.part)
                hasher.update(view[:n])
                hashed += n
            if finished:
                break
            now = time.monotonic()
            if now - last_save >= SAVE_EVERY:
                self.save()
                last_save = now
        if self.errors:
            raise self._first_error()
        if hashed != self.size:
            raise ContentMismatch(f"only {hashed} of {self.size} bytes arrived")
        return hasher

    def _durable(self, began: float) -> None:
        hashed_at = time.monotonic()
        self.stop.set()
        if self.flusher.is_alive():
            self.flusher.join()
        try:
            os.fsync(self.fd)
        except OSError as e:
            raise StorageError(f"cannot write {self.part}: {e.strerror}") from None
        now = time.monotonic()
        log.debug("parts done", model=self.model, file=self.file.path, seconds=round(now - began, 3),
                  hash_after_last_byte=round(hashed_at - (self.plan.arrived or began), 3), fsync=round(now - hashed_at, 3))

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
        order = (ContentMismatch, StorageError, NoRanges, SeederError, TransientError)
        for kind in order:
            for e in self.errors:
                if isinstance(e, kind):
                    return e
        return self.errors[0]


def download(client: Client, url: str, part: Path, file: LockedFile, progress, model: str
             ) -> Downloaded:
    """Fetch ``file`` from ``url`` into ``part`` over up to ``client.parts.connections`` connections.

    Raises :class:`NoRanges` when the server ignores ``Range`` (the partial is then
    left as a plain prefix for the single-stream path), ``TransientError`` when a
    part ran out of retries (progress is kept for the next attempt), and
    ``ContentMismatch`` on a size or digest mismatch.
    """
    job = PartedDownload(client, url, part, file, progress, model)
    try:
        return job.run()
    except NoRanges:
        adopt_prefix(part, file)
        raise
