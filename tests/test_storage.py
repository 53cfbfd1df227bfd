"""Disk full, read-only and permission problems end in exit 4 naming the path; nothing half-written shows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, blob, run_seeder, seeder_env, sha256, url_entry, write_manifest


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs made by the test."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _url_manifest(tmp_path: Path, url: str, data: bytes) -> Path:
    return write_manifest(tmp_path / "models.toml", url_entry("m", url, data))


def test_not_enough_space_up_front_exits_4_before_writing(hub, small_fs, tmp_path):
    data = blob(5 << 20, seed=1)
    m = _url_manifest(tmp_path, hub.add_file("big.bin", data), data)
    run = run_seeder("-m", str(m), "-t", str(small_fs / "t"), hub=hub)
    assert run.code == 4 and "not enough space" in run.err and "need 5.0 MiB" in run.err
    assert hub.body_bytes() == 0


def test_disk_filling_up_mid_download_exits_4_then_resumes(hub, small_fs, tmp_path):
    data = blob(3 << 20, seed=2)
    m = _url_manifest(tmp_path, hub.add_file("w.bin", data), data)
    target = small_fs / "t"
    hub.throttle_bps = 1 << 20
    proc = subprocess.Popen([sys.executable, "-m", "seeder", "-m", str(m), "-t", str(target), "--log-format", "json"],
                            env=seeder_env(hub.url), stderr=subprocess.PIPE, text=True)
    part = target / ".seeder" / "tmp" / f"sha256-{sha256(data)}.part"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < 512 << 10):
        time.sleep(0.02)
    filler = small_fs / "filler"  # another writer takes the rest of the disk
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (64 << 10))
                fh.flush()
        except OSError:
            pass
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    assert "no space left on device" in err.lower() and "Traceback" not in err
    assert not (target / "m").exists()
    kept = part.stat().st_size
    assert kept > 0

    filler.unlink()
    hub.throttle_bps = None
    hub.clear_log()
    run = run_seeder("-m", str(m), "-t", str(target), hub=hub)
    assert run.code == 0, run
    assert (target / "m" / "w.bin").read_bytes() == data
    assert hub.body_bytes() <= len(data) - kept + (64 << 10)


def test_permission_denied_exits_4_with_the_path(hub, tmp_path):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run as another user")
    data = blob(1000, seed=3)
    base = Path(tempfile.mkdtemp(prefix="seeder-perm-"))  # pytest's own tmp dirs are private to root
    os.chmod(base, 0o755)
    m = _url_manifest(base, hub.add_file("w.bin", data), data)
    target = base / "root-owned"
    target.mkdir(mode=0o755)
    env = seeder_env(hub.url, PYTHONPATH=str(ROOT))
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                           "seeder", "-m", str(m), "-t", str(target), "--log-format", "json"],
                          env=env, capture_output=True, text=True, cwd="/")
    if "Permission denied" in proc.stderr and "python" in proc.stderr.lower() and proc.returncode != 4:
        pytest.skip(f"the interpreter is not usable by uid 65534: {proc.stderr[:200]}")
    shutil.rmtree(base)
    assert proc.returncode == 4, proc.stderr
    assert "permission denied" in proc.stderr and str(target) in proc.stderr
    assert "Traceback" not in proc.stderr
