"""The dispatcher: one file from the first URL that works, in parts or as one stream, verified.

A file at least :attr:`~seeder.settings.Parts.multipart_min` large goes to :mod:`.parts` (many
connections); a server that ignores ``Range``, and every smaller file, go to :mod:`.stream`. A
digest or size mismatch discards the partial and starts once more from scratch; a second mismatch
is an :class:`~seeder.errors.IntegrityError`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import log
from ..errors import IntegrityError, RemoteError, TransientError
from ..integrity import ContentMismatch
from ..spec.lock import LockedFile
from . import parts, stream
from .partial import Downloaded, discard
from .transport import Client, give_up_on, safe


def download(client: Client, urls: list[str], part: Path, file: LockedFile, progress: log.FileProgress,
             model: str, tries: int = 2, sticky: bool = True) -> Downloaded:
    """Fill ``part`` with ``file``'s bytes from the first URL that works; resume what is there.

    ``tries``: downloads from scratch after a mismatch (a cache passes 1: its bad blob is not worth a
    second read when the origin is next); ``sticky``: a host that refused the connection is skipped for
    the rest of the run (a cache passes False: its circuit decides when to ask again)."""
    for attempt in range(1, tries + 1):
        try:
            return _any(client, urls, part, file, progress, model, sticky)
        except ContentMismatch as e:
            discard(part)
            if attempt == tries:
                raise IntegrityError(f"{model}/{file.path}: {e} (size {file.size})") from None
            log.warning("checksum mismatch, downloading again", model=model, file=file.path, error=str(e))
    raise AssertionError("unreachable")


@contextmanager
def scratch(client: Client, urls: list[str], file: LockedFile, model: str) -> Iterator[tuple[Path, Downloaded]]:
    """``file`` fetched (verified, with progress) into a temporary directory that goes on exit: for reading it
    once when locking (hashing an object, listing a tar layer) without keeping it."""
    with tempfile.TemporaryDirectory(prefix="seeder-scratch-") as tmp:
        progress = log.Progress(file.size)
        try:
            result = download(client, urls, Path(tmp) / "blob", file, progress.file(model, file.path, file.size), model)
        finally:
            progress.close()
        yield Path(tmp) / "blob", result


def _any(client: Client, urls: list[str], part: Path, file: LockedFile, progress, model: str,
         sticky: bool) -> Downloaded:
    last: RemoteError | None = None
    for url in urls:
        try:
            if client.parts.multipart(file.size):
                try:
                    # Retries per part inside; gives up (TransientError) only when one part runs out of them.
                    return parts.download(client, url, part, file, progress, model)
                except parts.NoRanges as e:
                    log.info("server ignores Range: one stream", model=model, file=file.path, reason=str(e))
            return stream.download(client, url, part, file, progress, model)
        except TransientError as e:
            last = RemoteError(f"{model}/{file.path}: {e} (gave up after {client.net.attempts} attempts)")
            if e.unreachable and sticky:
                give_up_on(url, str(e))
        except RemoteError as e:
            last = RemoteError(f"{model}/{file.path}: {e}")
        if len(urls) > 1:
            log.warning("source failed, trying next", model=model, file=file.path, url=safe(url), error=str(last))
    assert last is not None
    raise last
