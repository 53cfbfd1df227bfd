"""``seeder.fetch.partial`` on its own: the partial file, its sidecar of byte ranges, the one Content-Range
parser and the one write loop. test_partials.py and test_multipart.py cover them through real downloads;
these pin each rule and boundary on real files (written against the mutants tests/mutation found alive,
issue #15)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from seeder.errors import StorageError
from seeder.fetch.partial import (adopt_prefix, content_range, discard, gaps, kept_ranges, load_ranges, merge,
                                  open_partial, partial_path, prefix_end, preallocate, read_at, save_ranges,
                                  sidecar, size_on_disk, write_at)
from seeder.spec.lock import LockedFile
from tests.test_storage import small_fs  # noqa: F401  (fixture: a 4 MiB tmpfs)

FILE = LockedFile(path="w.bin", size=100, sha256="ab" * 32)


def _part(tmp_path: Path, data: bytes = b"", ranges=None, **overrides) -> Path:
    """A partial holding ``data``, with a sidecar recording ``ranges`` (fields overridable) if given."""
    part = partial_path(tmp_path, FILE)
    part.write_bytes(data)
    if ranges is not None:
        record = {"version": 1, "size": FILE.size, "digest": FILE.digest, "done": ranges} | overrides
        sidecar(part).write_text(json.dumps(record))
    return part


def test_names():
    part = partial_path(Path("/x/tmp"), FILE)
    assert part == Path(f"/x/tmp/sha256-{'ab' * 32}.part")
    assert sidecar(part) == Path(f"/x/tmp/sha256-{'ab' * 32}.part.ranges")


def test_discard_removes_partial_and_sidecar_and_minds_neither_missing(tmp_path: Path):
    part = _part(tmp_path, b"x" * 10, [[0, 10]])
    discard(part)
    assert list(tmp_path.iterdir()) == []
    discard(part)


def test_size_on_disk(tmp_path: Path):
    assert size_on_disk(tmp_path / "absent") == 0
    assert size_on_disk(_part(tmp_path, b"x" * 7)) == 7


@pytest.mark.parametrize("intervals, merged", [
    ([], []),
    ([(5, 5), (7, 3)], []),  # empty and backwards ranges hold nothing
    ([(0, 0), (2, 5), (6, 6), (7, 9)], [[2, 5], [7, 9]]),  # ... and the ranges after them still count
    ([(5, 9), (0, 3)], [[0, 3], [5, 9]]),
    ([(0, 5), (5, 9)], [[0, 9]]),  # touching ranges are one
    ([(0, 5), (6, 9)], [[0, 5], [6, 9]]),
    ([(0, 10), (2, 5)], [[0, 10]]),  # a range inside another adds nothing
    ([(0, 4), (2, 8), (8, 9)], [[0, 9]]),
    ([(0, 2), (4, 6), (5, 9)], [[0, 2], [4, 9]]),  # it is the last range that grows
    ([(0, 10), (12, 15), (13, 14)], [[0, 10], [12, 15]]),
])
def test_merge(intervals, merged):
    assert merge(intervals) == merged


def test_prefix_end():
    assert prefix_end([]) == 0
    assert prefix_end([[0, 7], [9, 12]]) == 7
    assert prefix_end([[3, 7]]) == 0


def test_load_ranges_reads_what_save_ranges_wrote_and_leaves_no_temporary(tmp_path: Path):
    part = _part(tmp_path, b"x" * 100)
    save_ranges(part, FILE, [[0, 10], [20, 30]])
    assert json.loads(sidecar(part).read_text()) == {"version": 1, "size": 100, "digest": FILE.digest,
                                                     "done": [[0, 10], [20, 30]]}
    assert sorted(p.name for p in tmp_path.iterdir()) == [part.name, sidecar(part).name]
    assert load_ranges(part, FILE, 100) == [[0, 10], [20, 30]]


def test_save_ranges_that_cannot_write_is_a_storage_error(tmp_path: Path):
    with pytest.raises(StorageError, match="cannot write"):
        save_ranges(tmp_path / "no-such-dir" / "x.part", FILE, [[0, 1]])


def test_load_ranges_clips_to_the_partial_and_the_file(tmp_path: Path):
    part = _part(tmp_path, b"x" * 50, [[-5, 10], [20, 80], [90, 200]])
    assert load_ranges(part, FILE, 50) == [[0, 10], [20, 50]]  # the partial holds 50 bytes only
    part = _part(tmp_path, b"x" * 150, [[0, 10], [90, 200]])
    assert load_ranges(part, FILE, 150) == [[0, 10], [90, 100]]  # nothing past the file's size


@pytest.mark.parametrize("text", [
    None,  # no sidecar: OSError
    "not json",  # ValueError
    '{"version": 1, "size": 100, "digest": "%s"}',  # no "done": KeyError
    '{"version": 1, "size": 100, "digest": "%s", "done": [[null, 1]]}',  # TypeError
    '{"version": 1, "size": 100, "digest": "%s", "done": [["a", 1]]}',  # ValueError
    '{"version": 1, "size": 100, "digest": "%s", "done": 5}',  # TypeError
    '[1, 2]',  # AttributeError
    '{"version": 2, "size": 100, "digest": "%s", "done": [[0, 1]]}',
    '{"version": 1, "size": 99, "digest": "%s", "done": [[0, 1]]}',
    '{"version": 1, "size": 100, "digest": "sha256-other", "done": [[0, 1]]}',
], ids=["missing", "json", "no-done", "null", "text", "number", "list", "version", "size", "digest"])
def test_an_unusable_sidecar_is_none(text, tmp_path: Path):
    part = _part(tmp_path, b"x" * 100)
    if text is not None:
        sidecar(part).write_text(text.replace("%s", FILE.digest))
    assert load_ranges(part, FILE, 100) is None


def test_a_sidecar_that_is_a_directory_is_unusable(tmp_path: Path):
    part = _part(tmp_path, b"x" * 100)
    sidecar(part).mkdir()
    assert load_ranges(part, FILE, 100) is None


def test_kept_ranges(tmp_path: Path):
    part = _part(tmp_path, b"x" * 60, [[0, 10], [30, 50]])
    assert kept_ranges(part, FILE, 60) == ([[0, 10], [30, 50]], None)  # a sidecar: keep what it records
    part = _part(tmp_path, b"x" * 60, [[0, 10]], version=9)
    assert kept_ranges(part, FILE, 60) == ([], 0)  # an unusable sidecar: the layout is unknown
    sidecar(part).unlink()
    assert kept_ranges(part, FILE, 60) == ([[0, 60]], 60)  # no sidecar: a plain prefix
    assert kept_ranges(part, FILE, 100) == ([[0, 100]], 100)
    assert kept_ranges(part, FILE, 101) == ([], 0)  # longer than the file: nothing is trusted
    assert kept_ranges(part, FILE, 0) == ([], 0)


def test_gaps():
    assert gaps([], 10) == [[0, 10]]
    assert gaps([[0, 10]], 10) == []
    assert gaps([[0, 4]], 10) == [[4, 10]]
    assert gaps([[2, 4], [6, 10]], 10) == [[0, 2], [4, 6]]
    assert gaps([[2, 4], [6, 8]], 10) == [[0, 2], [4, 6], [8, 10]]


def test_adopt_prefix_without_a_sidecar_keeps_the_partial(tmp_path: Path):
    part = _part(tmp_path, b"x" * 40)
    assert adopt_prefix(part, FILE) == 40
    assert part.read_bytes() == b"x" * 40
    assert adopt_prefix(tmp_path / "absent.part", FILE) == 0


def test_adopt_prefix_keeps_the_contiguous_head_and_drops_the_sidecar(tmp_path: Path):
    part = _part(tmp_path, bytes(range(60)), [[0, 10], [30, 50]])
    assert adopt_prefix(part, FILE) == 10
    assert part.read_bytes() == bytes(range(10))
    assert not sidecar(part).exists()


@pytest.mark.parametrize("ranges, extra", [([[5, 30]], {}), ([[0, 30]], {"size": 7})], ids=["no-head", "unusable"])
def test_adopt_prefix_with_no_trusted_head_empties_the_partial(ranges, extra, tmp_path: Path):
    part = _part(tmp_path, b"x" * 60, ranges, **extra)
    assert adopt_prefix(part, FILE) == 0
    assert part.read_bytes() == b""
    assert not sidecar(part).exists()


def test_adopt_prefix_of_a_sidecar_without_its_partial(tmp_path: Path):
    part = _part(tmp_path, b"", [[0, 30]])
    part.unlink()
    assert adopt_prefix(part, FILE) == 0
    assert not sidecar(part).exists() and not part.exists()


def test_adopt_prefix_that_cannot_cut_the_partial_is_a_storage_error(tmp_path: Path):
    part = partial_path(tmp_path, FILE)
    part.mkdir()  # os.truncate: EISDIR
    sidecar(part).write_text(json.dumps({"version": 1, "size": 100, "digest": FILE.digest, "done": [[0, 1]]}))
    with pytest.raises(StorageError, match="cannot write"):
        adopt_prefix(part, FILE)


@pytest.mark.parametrize("value, parsed", [
    ("bytes 0-99/100", (0, 99, 100)),
    ("bytes 5-9/*", (5, 9, None)),
    ("BYTES 1-2/3", (1, 2, 3)),
    ("bytes  7-8/9 ", (7, 8, 9)),
    ("items 0-1/2", (None, 0, None)),
    ("bytes 0-99", (None, 0, None)),
    ("bytes 0/100", (None, 0, None)),
    ("bytes x-1/2", (None, 0, None)),
    ("bytes 0-1/2/3", (None, 0, None)),
    ("bytes 5--1/100", (None, 0, None)),  # int() alone would read last = -1
    ("bytes +1-2/3", (None, 0, None)),
    ("bytes 1_0-20/30", (None, 0, None)),
    ("bytes", (None, 0, None)),
    ("", (None, 0, None)),
    (None, (None, 0, None)),
])
def test_content_range(value, parsed):
    assert content_range(value) == parsed


def test_open_partial_creates_a_writable_file_with_the_usual_mode(tmp_path: Path):
    part = tmp_path / "p.part"
    old = os.umask(0o022)
    try:
        fd = open_partial(part)
    finally:
        os.umask(old)
    try:
        write_at(fd, b"hello", 0, part)
    finally:
        os.close(fd)
    assert part.read_bytes() == b"hello"
    assert part.stat().st_mode & 0o777 == 0o644


def test_open_partial_keeps_what_is_there(tmp_path: Path):
    part = _part(tmp_path, b"0123456789")
    fd = open_partial(part)
    try:
        write_at(fd, b"ab", 4, part)
    finally:
        os.close(fd)
    assert part.read_bytes() == b"0123ab6789"


def test_open_partial_in_a_missing_directory_is_a_storage_error(tmp_path: Path):
    with pytest.raises(StorageError, match="cannot write"):
        open_partial(tmp_path / "absent" / "p.part")


def test_write_at_and_read_at(tmp_path: Path):
    part = tmp_path / "p.part"
    fd = open_partial(part)
    try:
        write_at(fd, memoryview(b"abcdef"), 10, part)
        assert part.read_bytes() == b"\0" * 10 + b"abcdef"
        buf = bytearray(4)
        assert read_at(fd, memoryview(buf), 11, part) == 4 and bytes(buf) == b"bcde"
        assert read_at(fd, memoryview(buf), 14, part) == 2 and bytes(buf[:2]) == b"ef"
        assert read_at(fd, memoryview(buf), 15, part) == 1 and bytes(buf[:1]) == b"f"  # the last byte alone
        with pytest.raises(StorageError, match="shorter than expected"):
            read_at(fd, memoryview(buf), 16, part)
    finally:
        os.close(fd)


def test_write_at_and_read_at_on_a_bad_descriptor_are_storage_errors(tmp_path: Path):
    fd = os.open(tmp_path / "ro", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(StorageError, match="cannot write"):
            write_at(fd, b"x", 0, tmp_path / "ro")
    finally:
        os.close(fd)
    with pytest.raises(StorageError, match="cannot read"):
        read_at(fd, memoryview(bytearray(1)), 0, tmp_path / "ro")


def test_preallocate_sizes_the_file_and_never_shrinks_it(tmp_path: Path):
    part = tmp_path / "p.part"
    fd = open_partial(part)
    try:
        preallocate(fd, 1000)
        assert os.fstat(fd).st_size == 1000
        write_at(fd, b"x" * 1000, 0, part)
        preallocate(fd, 0)
        assert os.fstat(fd).st_size == 1000
    finally:
        os.close(fd)


def test_preallocate_past_the_free_space_raises_enospc(small_fs: Path):
    part = small_fs / "p.part"
    fd = open_partial(part)
    try:
        with pytest.raises(OSError) as e:
            preallocate(fd, 8 << 20)
        assert e.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
