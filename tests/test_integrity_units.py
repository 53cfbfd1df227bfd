"""``seeder.integrity`` on its own: what a locked file's bytes must hash to, and hashing a file (or its first
bytes) from disk. The end-to-end tests reach these through the CLI; these pin each check and boundary
(they were written against the mutants tests/mutation found alive, issue #15)."""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from pathlib import Path

import pytest

from seeder.integrity import CHUNK, ContentMismatch, Hasher, hash_file
from seeder.spec.lock import LockedFile
from tests.conftest import blob, sha256
from tests.fakehub import git_blob_sha1

DATA = blob(2 * CHUNK + 12_345, seed=5)  # more than two read buffers: the loop goes round three times


def _file(data: bytes, *, sha: bool = True, git: bool = False) -> LockedFile:
    return LockedFile(path="w.bin", size=len(data), sha256=sha256(data) if sha else None,
                      git_oid=git_blob_sha1(data) if git else None)


def _hashed(data: bytes, file: LockedFile) -> Hasher:
    hasher = Hasher(file)
    hasher.update(data)
    return hasher


def test_the_right_bytes_pass_and_check_returns_their_sha256():
    assert _hashed(DATA, _file(DATA)).check() == sha256(DATA)
    assert _hashed(DATA, _file(DATA, git=True)).check() == sha256(DATA)


def test_a_wrong_sha256_is_a_mismatch_naming_both_digests():
    other = DATA[:-1] + b"\0"
    with pytest.raises(ContentMismatch) as e:
        _hashed(other, _file(DATA)).check()
    assert str(e.value) == f"sha256 {sha256(other)}, expected {sha256(DATA)}"


def test_a_git_blob_id_alone_is_checked_and_the_sha256_still_returned():
    # A small repo file the hub gives only a git blob id for: that id is the check.
    small = b'{"hidden_size": 384}\n'
    assert _hashed(small, _file(small, sha=False, git=True)).check() == sha256(small)
    with pytest.raises(ContentMismatch, match="git blob id"):
        _hashed(small[:-1] + b" ", _file(small, sha=False, git=True)).check()


def test_the_git_blob_id_is_checked_even_when_the_sha256_matches():
    file = LockedFile(path="w.bin", size=len(DATA), sha256=sha256(DATA), git_oid=git_blob_sha1(b"other"))
    with pytest.raises(ContentMismatch) as e:
        _hashed(DATA, file).check()
    assert str(e.value) == f"git blob id {git_blob_sha1(DATA)}, expected {git_blob_sha1(b'other')}"


def test_the_git_blob_id_covers_the_size_header_and_every_byte_fed():
    file = _file(DATA, sha=False, git=True)
    hasher = Hasher(file)
    for i in range(0, len(DATA), 1000):
        hasher.update(memoryview(DATA)[i:i + 1000])
    assert hasher.git.hexdigest() == hashlib.sha1(b"blob %d\0" % len(DATA) + DATA).hexdigest()
    assert hasher.sha256.hexdigest() == sha256(DATA)


def test_without_a_git_blob_id_no_sha1_is_computed():
    assert Hasher(_file(DATA)).git is None


def test_hash_file_reads_every_byte(tmp_path: Path):
    path = tmp_path / "w.bin"
    path.write_bytes(DATA)
    assert hash_file(path, _file(DATA, git=True)).check() == sha256(DATA)
    path.write_bytes(b"")
    assert hash_file(path, _file(b"")).check() == sha256(b"")


@pytest.mark.parametrize("limit", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, len(DATA), len(DATA) + 10])
def test_hash_file_with_a_limit_hashes_exactly_the_first_bytes(limit, tmp_path: Path):
    path = tmp_path / "w.bin"
    path.write_bytes(DATA)
    assert hash_file(path, _file(DATA), limit=limit).sha256.hexdigest() == sha256(DATA[:limit])


def test_hash_file_reads_unbuffered_and_warns_of_nothing(tmp_path: Path):
    # Line buffering in binary mode would print a RuntimeWarning on every hash (seeder verify's stderr).
    path = tmp_path / "w.bin"
    path.write_bytes(DATA)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hash_file(path, _file(DATA)).check() == sha256(DATA)


def test_hash_file_reads_a_pipe_where_read_ahead_advice_is_refused(tmp_path: Path):
    # posix_fadvise fails on a FIFO (ESPIPE): the advice is only a hint, the bytes are hashed all the same.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as fh:
            fh.write(DATA)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert hash_file(fifo, _file(DATA)).check() == sha256(DATA)
    finally:
        writer.join(timeout=10)
