"""Disk full, read-only and permission problems end in exit 4 naming the path; nothing half-written shows."""

from __future__ import annotations

import json
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
    with open(filler, "wb", buffering=0) as fh:  # unbuffered: a short last write leaves nothing to flush at close
        try:
            while True:
                fh.write(b"\0" * (64 << 10))
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


NOBODY = 65534


def _as_nobody(env: dict[str, str]) -> list[str]:
    """The setpriv prefix that runs this very interpreter, able to import seeder, as uid 65534; skips if none can."""
    plain = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    # An interpreter installed where only root may enter (pyenv under /root) cannot load its libpython or
    # its stdlib as that user: ld.so exits 127, or finds the system's libpython and runs another Python. What
    # this test is about is writing, so the user may then read and search everything (CAP_DAC_READ_SEARCH,
    # ambient so that it survives exec); a write to a directory it does not own is still refused.
    reading = [*plain, "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    probe = "import json, sys, seeder.cli; print(json.dumps([sys.version, sys.base_prefix]))"
    tried = []
    for prefix in (plain, reading):
        proc = subprocess.run([*prefix, sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                              cwd="/")
        if proc.returncode == 0 and proc.stdout.strip() == json.dumps([sys.version, sys.base_prefix]):
            return prefix
        said = (proc.stderr or proc.stdout).strip()[-300:]
        tried.append(f"{' '.join(prefix[4:]) or 'as is'}: exit {proc.returncode} {said}")
    pytest.skip(f"uid {NOBODY} cannot run {sys.executable}; " + "; ".join(tried))


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
    proc = subprocess.run([*_as_nobody(env), sys.executable, "-m", "seeder", "-m", str(m), "-t", str(target),
                           "--log-format", "json"], env=env, capture_output=True, text=True, cwd="/")
    shutil.rmtree(base)
    assert proc.returncode == 4, proc.stderr
    assert "permission denied" in proc.stderr and str(target) in proc.stderr
    assert "Traceback" not in proc.stderr
