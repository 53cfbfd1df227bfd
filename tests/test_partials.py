"""A partial left in ``<target>/.seeder/tmp`` is a hint, never proof: whatever it holds is hashed again
before anything is installed, through the CLI, on both download paths and for every partial layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from seeder.fetch.partial import save_ranges
from seeder.spec.lock import LockedFile
from tests.conftest import blob, file_sha256, run_seeder, seeder_env, sha256, url_entry, write_manifest

P = 1 << 20
DATA = blob(4 * P + 123, seed=61)
SIZE = len(DATA)
MODES = {
    "stream": {"SEEDER_CONNECTIONS": "1"},
    "parts": {"SEEDER_CONNECTIONS": "4", "SEEDER_PART_SIZE": str(P), "SEEDER_MULTIPART_MIN": str(P)},
}
SIDECAR = [[0, P], [2 * P, 3 * P]]
"""What a killed multi-part run records: a head and one range further on."""


def _plant(part: Path, layout: str, mode: str, wrong: bool) -> int:
    """Leave ``part`` as an interrupted run would, with one flipped byte if ``wrong``; returns the bytes
    the resumed download still has to fetch."""
    part.parent.mkdir(parents=True)
    if layout == "prefix":
        held, spoil, left = bytearray(DATA[: SIZE // 2]), SIZE // 4, SIZE - SIZE // 2
    elif layout == "complete":  # killed after the last byte, before the rename
        held, spoil, left = bytearray(DATA), SIZE - 10, 0
    else:
        held = bytearray(b"\xee" * SIZE)  # bytes outside the recorded ranges are garbage
        for a, b in SIDECAR:
            held[a:b] = DATA[a:b]
        # A stream keeps only the sidecar's contiguous head; parts keep every recorded range.
        spoil, left = (100, SIZE - P) if mode == "stream" else (2 * P + 100, SIZE - 2 * P)
    if wrong:
        held[spoil] ^= 0xFF
    part.write_bytes(bytes(held))
    if layout == "sidecar":
        save_ranges(part, LockedFile(path="w.bin", size=SIZE, sha256=sha256(DATA)), SIDECAR)
    return left


@pytest.mark.parametrize("wrong", [True, False], ids=["wrong-bytes", "right-bytes"])
@pytest.mark.parametrize("layout", ["prefix", "complete", "sidecar"])
@pytest.mark.parametrize("mode", list(MODES))
def test_a_planted_partial_is_hashed_again_before_it_is_installed(mode, layout, wrong, hub, tmp_path):
    m = write_manifest(tmp_path / "models.toml", url_entry("m", hub.add_file("w.bin", DATA), DATA))
    target = tmp_path / "t"
    left = _plant(target / ".seeder" / "tmp" / f"sha256-{sha256(DATA)}.part", layout, mode, wrong)

    run = run_seeder("-m", str(m), "-t", str(target), env=seeder_env(hub.url, **MODES[mode]))
    assert run.code == 0, run
    assert file_sha256(target / "m" / "w.bin") == sha256(DATA)
    assert list((target / ".seeder" / "tmp").iterdir()) == []  # no partial, no sidecar left behind
    ranges = [r.range for r in hub.requests if r.method == "GET"]
    summary = [e for e in run.events if e["event"] == "summary"][-1]
    mismatch = [e for e in run.events if e["event"] == "checksum mismatch, downloading again"]
    if wrong:
        # The resume really used the partial, then the whole file came again, and the summary says so.
        assert hub.body_bytes() == left + SIZE, ranges
        assert any(r is None or r.startswith("bytes=0-") for r in ranges), ranges
        assert (summary["bytes_downloaded"], summary["bytes_reused"]) == (SIZE, 0)
        assert len(mismatch) == 1, run
    else:
        assert hub.body_bytes() == left, ranges
        assert not any(r is None or r.startswith("bytes=0-") for r in ranges), ranges
        assert (summary["bytes_downloaded"], summary["bytes_reused"]) == (left, SIZE - left)
        assert mismatch == [], run
    assert run_seeder("verify", "-m", str(m), "-t", str(target)).code == 0
