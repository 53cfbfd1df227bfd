"""Another seeded target as a read-only cache (how the bundled seeder image fills its volume)."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import blob, file_sha256, run_seeder, sha256, url_entry, write_manifest


def _served(hub) -> int:
    return sum(r.bytes_sent for r in hub.requests if r.status in (200, 206) and "/api/" not in r.path)


@contextmanager
def mounted(path: Path, *how: str):
    if os.geteuid() != 0 or subprocess.run(["mount", *how, str(path)], capture_output=True).returncode:
        pytest.skip("needs root to mount")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def read_only(path: Path):
    """Like an image layer: nothing may be written there, not even by root."""
    return mounted(path, "--bind", "-o", "ro", str(path))


def _bundle(hub, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    data = {"a": blob(400_000, seed=11), "b": blob(300_000, seed=12)}
    text = "".join(url_entry(name, hub.add_file(f"{name}.bin", d), d) for name, d in data.items())
    manifest = write_manifest(tmp_path / "models.toml", text)
    bundle = tmp_path / "bundle"
    assert run_seeder("-m", str(manifest), "-t", str(bundle), hub=hub).code == 0
    hub.clear_log()
    return bundle, data


def test_a_target_fills_from_a_bundle_without_the_network(hub, tmp_path):
    bundle, data = _bundle(hub, tmp_path)
    target = tmp_path / "volume"
    with read_only(bundle):
        run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(target), "--cache", str(bundle), hub=hub)
    assert run.code == 0, run
    assert hub.requests == []  # the origin is there, and not asked
    for name, d in data.items():
        assert file_sha256(target / name / f"{name}.bin") == sha256(d)
    assert run_seeder("verify", "-m", str(tmp_path / "models.toml"), "-t", str(target), hub=hub).code == 0


def test_a_model_the_bundle_lacks_is_downloaded_and_only_it(hub, tmp_path):
    bundle, data = _bundle(hub, tmp_path)
    new = blob(250_000, seed=13)
    manifest = tmp_path / "models.toml"
    manifest.write_text(manifest.read_text() + url_entry("c", hub.add_file("c.bin", new), new))
    with read_only(bundle):
        run = run_seeder("-m", str(manifest), "-t", str(tmp_path / "volume"), "--cache", str(bundle), hub=hub)
    assert run.code == 0, run
    assert _served(hub) == len(new)
    assert file_sha256(tmp_path / "volume" / "c" / "c.bin") == sha256(new)


def test_a_damaged_bundled_file_is_never_installed(hub, tmp_path):
    bundle, data = _bundle(hub, tmp_path)
    victim = next((bundle / ".seeder" / "versions" / "a").iterdir()) / "a.bin"
    victim.write_bytes(b"X" * len(data["a"]))  # same size: only hashing notices
    target = tmp_path / "volume"
    with read_only(bundle):
        run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(target), "--cache", str(bundle), hub=hub)
    assert run.code == 0, run
    damaged = [e for e in run.events if e["level"] == "warning"]
    assert [(e["event"], e["cache"], e["file"]) for e in damaged] == [
        ("cached copy damaged, downloading again", str(bundle), "a.bin")], run.err
    assert file_sha256(target / "a" / "a.bin") == sha256(data["a"])
    assert _served(hub) == len(data["a"])  # the damaged one came from the origin, the other from the bundle
    assert victim.read_bytes() == b"X" * len(data["a"])  # the bundle is never changed


def test_cache_commands_leave_a_bundle_alone(hub, tmp_path):
    bundle, _ = _bundle(hub, tmp_path)
    before = sorted(p.relative_to(bundle) for p in bundle.rglob("*"))
    with read_only(bundle):
        run = run_seeder("cache", "prune", "-m", str(tmp_path / "models.toml"), "--cache", str(bundle), hub=hub)
    assert run.code == 0, run
    assert [e["cache"] for e in run.events if e["event"].startswith("skipped")] == [str(bundle)]
    assert sorted(p.relative_to(bundle) for p in bundle.rglob("*")) == before


def test_a_seeded_target_on_the_same_filesystem_is_copied_not_linked(hub, tmp_path):
    bundle, data = _bundle(hub, tmp_path)
    target = tmp_path / "volume"
    assert run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(target), "--cache", str(bundle), hub=hub).code == 0
    assert hub.requests == []
    for name in data:
        mine, theirs = target / name / f"{name}.bin", bundle / name / f"{name}.bin"
        assert mine.read_bytes() == theirs.read_bytes() and not os.path.samefile(mine, theirs)


def test_no_room_for_the_copies_is_said_before_a_byte_is_written(hub, tmp_path):
    bundle, data = _bundle(hub, tmp_path)
    target = tmp_path / "small"
    target.mkdir()
    with mounted(target, "-t", "tmpfs", "-o", "size=512k", "seeder-small"):
        run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(target), "--cache", str(bundle), hub=hub)
        assert run.code == 4 and f"not enough space in {target}: need 683.6 KiB" in run.err, run
        assert not any(p.is_file() for p in (target / ".seeder" / "versions").rglob("*"))
    assert hub.requests == []
