"""``seeder.fetch.stream``: one connection, resuming the partial's prefix with ``Range``, against a real HTTP
server on 127.0.0.1 that answers as scripted (a server that lies about ranges and lengths is the point,
and FakeHub is honest). Each rule of the single stream is pinned here; test_partials.py, test_faults.py and
test_multipart.py cover the same paths through the CLI (written against the mutants tests/mutation found
alive, issue #15)."""

from __future__ import annotations

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from seeder.errors import RemoteError, StorageError, TransientError
from seeder.fetch import stream
from seeder.fetch.partial import partial_path, save_ranges
from seeder.fetch.transport import Client
from seeder.integrity import ContentMismatch
from seeder.settings import Network
from seeder.spec.lock import LockedFile
from tests.conftest import blob, sha256

DATA = blob(300_000, seed=81)
FILE = LockedFile(path="w.bin", size=len(DATA), sha256=sha256(DATA))


class Reply:
    """One scripted answer: ``body`` (default: DATA from the requested offset), ``cut``: send only that many
    bytes of it, then close (after ``stall`` seconds); ``length``: the Content-Length to announce (None:
    none, the body ends at close)."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None, body: bytes | None = None,
                 cut: int | None = None, length: int | str | None = "auto", stall: float = 0):
        self.status, self.headers, self.body, self.cut, self.length = status, headers or {}, body, cut, length
        self.stall = stall


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        server: Scripted = self.server  # type: ignore[assignment]
        asked = self.headers.get("Range")
        server.ranges.append(asked)
        reply = server.replies.pop(0) if server.replies else honest(asked)
        body = reply.body if reply.body is not None else DATA
        sent = body if reply.cut is None else body[: reply.cut]
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        if reply.length == "auto":
            self.send_header("Content-Length", str(len(body)))
        elif reply.length is not None:
            self.send_header("Content-Length", str(reply.length))
        if reply.cut is not None or reply.length is None:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(sent)
        self.wfile.flush()
        time.sleep(reply.stall)


def honest(asked: str | None) -> Reply:
    if not asked:
        return Reply(200)
    start = int(asked.removeprefix("bytes=").split("-")[0])
    if start >= len(DATA):
        return Reply(416, {"Content-Range": f"bytes */{len(DATA)}"}, b"")
    return Reply(206, {"Content-Range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"}, DATA[start:])


class Scripted(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies: list[Reply] = []
        self.ranges: list[str | None] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}/w.bin"

    def handle_error(self, request, client_address) -> None:
        pass  # the client hung up on a scripted answer: expected


@pytest.fixture
def server():
    srv = Scripted()
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


class Progress:
    def __init__(self):
        self.resumed: list[int] = []
        self.updated = 0

    def resumed_at(self, offset: int) -> None:
        self.resumed.append(offset)

    def update(self, n: int) -> None:
        self.updated += n


def _get(server: Scripted, part: Path, file: LockedFile = FILE, attempts: int = 3, read_timeout: float = 5):
    client = Client(Network(endpoint="https://hub.invalid", attempts=attempts, backoff_max=0.01,
                            read_timeout=read_timeout))
    progress = Progress()
    done = stream.download(client, server.url, part, file, progress, "m")
    return done, progress


@pytest.fixture
def part(tmp_path: Path) -> Path:
    return partial_path(tmp_path, FILE)


def test_a_fresh_download_asks_for_everything(server, part):
    done, progress = _get(server, part)
    assert (done.sha256, done.fetched) == (sha256(DATA), len(DATA))
    assert part.read_bytes() == DATA
    assert server.ranges == [None]
    assert progress.resumed == [0] and progress.updated == len(DATA)


def test_a_prefix_is_resumed_with_range_and_hashed_with_the_rest(server, part):
    part.write_bytes(DATA[:100_000])
    done, progress = _get(server, part)
    assert (done.sha256, done.fetched) == (sha256(DATA), len(DATA) - 100_000)
    assert part.read_bytes() == DATA
    assert server.ranges == ["bytes=100000-"]
    assert progress.resumed == [100_000] and progress.updated == len(DATA) - 100_000


def test_a_wrong_prefix_fails_the_digest(server, part):
    part.write_bytes(b"\xee" * 100_000)
    with pytest.raises(ContentMismatch, match="sha256"):
        _get(server, part)


def test_the_head_of_a_multipart_partial_is_resumed(server, part):
    part.write_bytes(DATA[:50_000] + b"\xee" * 50_000 + DATA[100_000:150_000])
    save_ranges(part, FILE, [[0, 50_000], [100_000, 150_000]])
    done, _ = _get(server, part)
    assert done.fetched == len(DATA) - 50_000 and server.ranges == ["bytes=50000-"]
    assert part.read_bytes() == DATA


def test_a_server_ignoring_range_sends_everything_again(server, part):
    part.write_bytes(b"\xee" * 100_000)
    server.replies.append(Reply(200))
    done, progress = _get(server, part)
    assert (done.sha256, done.fetched) == (sha256(DATA), len(DATA))
    assert part.read_bytes() == DATA and progress.resumed == [0]


def test_a_partial_longer_than_the_file_starts_over_and_ends_at_the_right_size(server, part):
    part.write_bytes(b"\xee" * (len(DATA) + 5000))
    done, _ = _get(server, part)
    assert server.ranges == [None]
    assert done.fetched == len(DATA) and part.read_bytes() == DATA


def test_a_complete_partial_is_hashed_without_a_request(server, part):
    part.write_bytes(DATA)
    done, progress = _get(server, part)
    assert (done.sha256, done.fetched) == (sha256(DATA), 0)
    assert server.ranges == [] and progress.resumed == [len(DATA)]


def test_a_complete_partial_with_wrong_bytes_is_a_mismatch_without_a_request(server, part):
    part.write_bytes(DATA[:-1] + b"\0")
    with pytest.raises(ContentMismatch):
        _get(server, part)
    assert server.ranges == []


def test_a_complete_one_byte_partial_is_hashed_without_a_request(server, tmp_path: Path):
    one = LockedFile(path="b", size=1, sha256=sha256(DATA[:1]))
    part = partial_path(tmp_path, one)
    part.write_bytes(DATA[:1])
    done, _ = _get(server, part, one)
    assert (done.sha256, done.fetched) == (sha256(DATA[:1]), 0) and server.ranges == []


def test_an_empty_file_is_fetched(server, tmp_path: Path):
    empty = LockedFile(path="e", size=0, sha256=sha256(b""))
    server.replies.append(Reply(200, body=b""))
    done, _ = _get(server, partial_path(tmp_path, empty), empty)
    assert (done.sha256, done.fetched) == (sha256(b""), 0)
    assert server.ranges == [None]


def test_416_for_our_range_drops_the_partial_and_starts_over(server, part):
    part.write_bytes(DATA[:1000])
    server.replies.append(Reply(416, {"Content-Range": f"bytes */{len(DATA)}"}, b""))
    done, _ = _get(server, part)
    assert server.ranges == ["bytes=1000-", None]
    assert done.fetched == len(DATA) and part.read_bytes() == DATA


def test_416_without_a_range_is_a_remote_error(server, part):
    server.replies.append(Reply(416, body=b""))
    with pytest.raises(RemoteError, match="416"):
        _get(server, part)


def test_a_206_for_another_offset_drops_the_partial_and_starts_over(server, part):
    part.write_bytes(DATA[:1000])
    server.replies.append(Reply(206, {"Content-Range": f"bytes 0-{len(DATA) - 1}/{len(DATA)}"}))
    done, _ = _get(server, part)
    assert server.ranges == ["bytes=1000-", None]
    assert done.fetched == len(DATA) and part.read_bytes() == DATA


def test_a_206_for_another_offset_without_retries_leaves_no_partial(server, part):
    part.write_bytes(DATA[:1000])
    server.replies.append(Reply(206, {"Content-Range": f"bytes 0-{len(DATA) - 1}/{len(DATA)}"}))
    with pytest.raises(TransientError, match="refused our range"):
        _get(server, part, attempts=1)
    assert not part.exists()


def test_a_206_to_a_request_without_range_is_refused_too(server, part):
    server.replies.append(Reply(206, {"Content-Range": f"bytes 5-{len(DATA) - 1}/{len(DATA)}"}, DATA[5:]))
    done, _ = _get(server, part)  # no partial yet: nothing to drop, and the retry asks for everything
    assert server.ranges == [None, None]
    assert done.fetched == len(DATA) and part.read_bytes() == DATA


def test_a_server_error_is_retried(server, part):
    server.replies.append(Reply(503, body=b"busy"))
    done, _ = _get(server, part)
    assert done.fetched == len(DATA) and server.ranges == [None, None]


def test_a_wrong_content_length_is_a_mismatch_before_any_byte_is_written(server, part):
    server.replies.append(Reply(200, length=len(DATA) + 1, body=DATA + b"x"))
    with pytest.raises(ContentMismatch, match=f"server announced {len(DATA) + 1} bytes"):
        _get(server, part)
    assert not part.exists() or part.stat().st_size == 0


def test_a_wrong_content_length_of_a_resumed_range_counts_from_the_offset(server, part):
    part.write_bytes(DATA[:1000])
    rest = DATA[1000:] + b"x"
    server.replies.append(Reply(206, {"Content-Range": f"bytes 1000-{len(DATA)}/{len(DATA) + 1}"}, rest))
    with pytest.raises(ContentMismatch, match=f"server announced {len(DATA) + 1} bytes"):
        _get(server, part)


def test_a_connection_cut_mid_body_keeps_the_bytes_and_resumes_there(server, part):
    server.replies.append(Reply(200, cut=120_000))
    done, progress = _get(server, part)
    assert server.ranges == [None, "bytes=120000-"]
    assert (done.sha256, done.fetched) == (sha256(DATA), len(DATA) - 120_000)
    assert progress.resumed == [0, 120_000]


def test_a_stalled_body_with_no_retry_left_says_where_it_stopped_and_keeps_the_bytes(server, part):
    server.replies.append(Reply(200, cut=2 * stream.NET_CHUNK, stall=1.5))  # whole reads: none is lost
    with pytest.raises(TransientError, match=f"timed out after {2 * stream.NET_CHUNK} bytes$"):
        _get(server, part, attempts=1, read_timeout=0.5)
    assert part.read_bytes() == DATA[:2 * stream.NET_CHUNK]


def test_a_body_that_ends_early_without_a_length_is_resumed(server, part):
    server.replies.append(Reply(200, body=DATA[:70_000], length=None))
    with pytest.raises(TransientError, match=f"connection closed after 70000 of {len(DATA)} bytes"):
        _get(server, part, attempts=1)
    assert part.read_bytes() == DATA[:70_000]
    done, _ = _get(server, part)
    assert done.fetched == len(DATA) - 70_000 and part.read_bytes() == DATA


def test_a_server_sending_more_than_the_size_gets_no_byte_past_it_written(server, part):
    server.replies.append(Reply(200, body=DATA + b"x" * 100_000, length=None))
    with pytest.raises(ContentMismatch, match="more than the expected"):
        _get(server, part)
    assert part.stat().st_size <= len(DATA)


def test_exactly_the_size_without_a_length_is_accepted(server, part):
    server.replies.append(Reply(200, length=None))
    done, _ = _get(server, part)
    assert done.fetched == len(DATA) and part.read_bytes() == DATA


def test_a_partial_that_cannot_be_written_is_a_storage_error(server, part):
    os.mkfifo(part)  # opens read-write, but cannot be truncated or written at an offset
    with pytest.raises(StorageError, match="cannot write"):
        _get(server, part)
