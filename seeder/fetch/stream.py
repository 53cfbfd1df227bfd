"""One connection: fetch a file as one stream into its partial, resuming a prefix with ``Range``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import StorageError, TransientError
from ..integrity import ContentMismatch, Hasher, hash_file
from ..spec.lock import LockedFile
from .partial import Downloaded, adopt_prefix, content_range, open_partial, write_at
from .retry import classify, honour, retrying
from .transport import Client

NET_CHUNK = 1 << 16  # a read that fails loses its partial chunk, so keep network reads small


def download(client: Client, url: str, part: Path, file: LockedFile, progress, model: str) -> Downloaded:
    """Fetch ``file`` from ``url`` into ``part`` over one connection, retrying and resuming what arrived."""
    for attempt in retrying(client.net, "download", model, file.path):
        with attempt:
            return _once(client, url, part, file, progress)
    raise AssertionError("unreachable")


def _once(client: Client, url: str, part: Path, file: LockedFile, progress) -> Downloaded:
    have = adopt_prefix(part, file)  # a multi-part partial too: keep its contiguous head
    if have > file.size:
        have = 0
    if have == file.size and have > 0:
        # A complete partial from a run killed before the rename: just check it.
        progress.resumed_at(have)
        return Downloaded(sha256=hash_file(part, file).check(), fetched=0)
    honour(url)  # a rate limit another download on this host was told of
    resp = client.request("GET", url, headers={"Range": f"bytes={have}-"} if have else {})
    with resp:
        if (resp.status_code == 416 and have) or (
                resp.status_code == 206 and content_range(resp.headers.get("Content-Range"))[0] != have):
            part.unlink(missing_ok=True)  # our partial does not fit what the server has now
            raise TransientError("server refused our range; restarting from scratch")
        classify(resp, url, client.net)
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


def _stream(resp, part: Path, start: int, file: LockedFile, hasher: Hasher, progress) -> int:
    fetched = 0
    fd = open_partial(part)
    try:
        os.ftruncate(fd, start)
        try:
            for chunk in resp.chunks(NET_CHUNK):
                if start + fetched + len(chunk) > file.size:
                    raise ContentMismatch(f"server sent more than the expected {file.size} bytes")
                write_at(fd, chunk, start + fetched, part)
                hasher.update(chunk)
                fetched += len(chunk)
                progress.update(len(chunk))
        except TransientError as e:
            # Keep what arrived: the retry resumes from here with a Range request.
            raise TransientError(f"{e} after {start + fetched} bytes") from None
        os.fsync(fd)
    except OSError as e:
        raise StorageError(f"cannot write {part}: {e.strerror}") from None
    finally:
        os.close(fd)
    return fetched
