"""Move bytes from a URL into a partial file: resumable, retried, hashed while streaming.

A partial file only ever holds a prefix of the expected content (or, for a
multi-part download, the byte ranges its sidecar records: see
:mod:`seeder.parts`); the caller renames it into place after :func:`download`
returns, which happens only once size and digest are right.

tenacity is imported on first use: ``seeder verify`` needs only :func:`hash_file`
from here, and a warm run needs nothing. HTTP itself is :mod:`seeder.transport`.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import log, transport
from .config import Network
from .errors import IntegrityError, RemoteError, StorageError, TransientError
from .lock import LockedFile
from .transport import Response, safe as _safe

if TYPE_CHECKING:
    from tenacity import Retrying

CHUNK = 1 << 20
NET_CHUNK = 1 << 16  # a read that fails loses its partial chunk, so keep network reads small
RETRY_AFTER_MAX = 120.0  # a server asking for longer gets this; it is still a retry, not a hang


class ContentMismatch(Exception):
    """The bytes are wrong (size or digest): the partial is discarded."""


@dataclass(frozen=True)
class Downloaded:
    sha256: str
    fetched: int
    """Bytes received over the network in this call (resumed bytes excluded)."""


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


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


class Client:
    """One per run; each thread gets its own session so connections are reused."""

    def __init__(self, net: Network):
        self.net = net
        self._local = threading.local()
        self._proxied = transport.environment_matters()

    @property
    def session(self) -> transport.AnySession:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self.new_session()
        return session

    def new_session(self) -> transport.AnySession:
        """A session of its own (one keep-alive connection per host), e.g. for one part worker."""
        return transport.new_session(self.net, self._proxied)

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                session: transport.AnySession | None = None, allow_redirects: bool = True) -> Response:
        return (session or self.session).request(method, url, headers or {}, allow_redirects=allow_redirects)

    def retrying(self, what: str, model: str, path: str | None = None) -> Retrying:
        from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

        base = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.net.retries),
            reraise=True,
        )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return backoff(self.net, state.attempt_number, getattr(exc, "retry_after", None))

        def before_sleep(state: RetryCallState) -> None:
            log.warning("retrying", what=what, model=model, file=path, attempt=state.attempt_number,
                        error=str(state.outcome.exception()), wait=round(state.upcoming_sleep, 2))

        return base.copy(wait=wait, before_sleep=before_sleep)


def backoff(net: Network, attempt: int, retry_after: float | None) -> float:
    """Seconds to wait after failed attempt ``attempt``: exponential with jitter, at least what the server asked."""
    wait = min(net.backoff_max, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
    return max(wait, retry_after) if retry_after is not None else wait


def is_transient(status: int) -> bool:
    """Worth asking again: timeouts, too early, rate limits and every server error."""
    return status in (408, 425, 429) or 500 <= status < 600


def classify(resp: Response, url: str) -> None:
    """Raise the right error for a non-success response."""
    status = resp.status_code
    if status < 400:
        return
    where = _safe(url)
    if is_transient(status):
        raise TransientError(f"HTTP {status} from {where}", _retry_after(resp.headers.get("Retry-After")))
    if status in (401, 403):
        raise RemoteError(f"HTTP {status} for {where}: gated or private: set HF_TOKEN (and accept the model's terms)")
    if status == 404:
        raise RemoteError(f"HTTP 404 for {where}: not found")
    raise RemoteError(f"HTTP {status} for {where}")


def download(client: Client, urls: list[str], part: Path, file: LockedFile, progress: log.FileProgress,
             model: str) -> Downloaded:
    """Fill ``part`` with ``file``'s bytes from the first URL that works; resume what is there.

    A digest or size mismatch discards the partial and starts once more from
    scratch; a second mismatch is an :class:`IntegrityError`.
    """
    from . import parts

    for attempt in (1, 2):
        try:
            return _download_any(client, urls, part, file, progress, model)
        except ContentMismatch as e:
            part.unlink(missing_ok=True)
            parts.sidecar(part).unlink(missing_ok=True)
            if attempt == 2:
                raise IntegrityError(f"{model}/{file.path}: {e} (size {file.size})") from None
            log.warning("checksum mismatch, downloading again", model=model, file=file.path, error=str(e))
    raise AssertionError("unreachable")


def _download_any(client, urls, part, file, progress, model) -> Downloaded:
    from . import parts

    last: RemoteError | None = None
    for url in urls:
        try:
            if client.net.multipart(file.size):
                try:
                    # Retries per part inside; gives up (TransientError) only when one part runs out of them.
                    return parts.download(client, url, part, file, progress, model)
                except parts.NoRanges as e:
                    log.info("server ignores Range: one stream", model=model, file=file.path, reason=str(e))
            for attempt in client.retrying("download", model, file.path):
                with attempt:
                    return _download_once(client, url, part, file, progress)
        except TransientError as e:
            last = RemoteError(f"{model}/{file.path}: {e} (gave up after {client.net.retries} attempts)")
        except RemoteError as e:
            last = RemoteError(f"{model}/{file.path}: {e}")
        if len(urls) > 1:
            log.warning("source failed, trying next", model=model, file=file.path, url=_safe(url), error=str(last))
    assert last is not None
    raise last


def _download_once(client: Client, url: str, part: Path, file: LockedFile, progress) -> Downloaded:
    try:
        have = part.stat().st_size
    except FileNotFoundError:
        have = 0
    if have:
        from . import parts

        have = parts.adopt_prefix(part, file, have)  # a multi-part partial: keep its contiguous head
    if have > file.size:
        have = 0
    headers = {"Range": f"bytes={have}-"} if 0 < have else {}
    if have == file.size and have > 0:
        # A complete partial from a run killed before the rename: just check it.
        progress.resumed_at(have)
        return Downloaded(sha256=hash_file(part, file).check(), fetched=0)
    resp = client.request("GET", url, headers=headers)
    with resp:
        if (resp.status_code == 416 and have) or (resp.status_code == 206 and _range_start(resp) != have):
            part.unlink(missing_ok=True)  # our partial does not fit what the server has now
            raise TransientError("server refused our range; restarting from scratch")
        classify(resp, url)
        start = have if resp.status_code == 206 else 0
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and start + int(length) != file.size:
            raise ContentMismatch(f"server announced {start + int(length)} bytes, expected {file.size}")
        hasher = hash_file(part, file, limit=start) if start else Hasher(file)
        progress.resumed_at(start)
        fetched = _stream(resp, part, start, file, hasher, progress)
    if start + fetched < file.size:
        raise TransientError(f"connection closed after {start + fetched} of {file.size} bytes")
    return Downloaded(sha256=hasher.check(), fetched=fetched)


def _range_start(resp: Response) -> int | None:
    value = resp.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _stream(resp, part: Path, start: int, file: LockedFile, hasher: Hasher, progress) -> int:
    fetched = 0
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError as e:
        raise StorageError(f"cannot write {part}: {e.strerror}") from None
    try:
        os.ftruncate(fd, start)
        os.lseek(fd, start, os.SEEK_SET)
        try:
            for chunk in resp.chunks(NET_CHUNK):
                if start + fetched + len(chunk) > file.size:
                    raise ContentMismatch(f"server sent more than the expected {file.size} bytes")
                _write_all(fd, chunk, part)
                hasher.update(chunk)
                fetched += len(chunk)
                progress.update(len(chunk))
        except TransientError as e:
            # Keep what arrived: the retry resumes from here with a Range request.
            raise TransientError(f"{e} after {start + fetched} bytes") from None
        os.fsync(fd)
    finally:
        os.close(fd)
    return fetched


def _write_all(fd: int, data: bytes, part: Path) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError as e:
            raise StorageError(f"cannot write {part}: {e.strerror}") from None
        view = view[written:]
