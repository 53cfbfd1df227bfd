"""Concurrent seeders on one target, and on one cache from two targets: all succeed, bytes fetched once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from seeder.store.fs import WAIT_LOG_EVERY
from tests.conftest import blob, file_sha256, run_seeder, seeder_env, sha256
from tests.fakehub import DEFAULT_GITATTRIBUTES

FILES = {f"shard-{i}.safetensors": blob(512 << 10, seed=100 + i) for i in range(6)}
FILES["config.json"] = b'{"shards": 6}'
FILES[".gitattributes"] = DEFAULT_GITATTRIBUTES  # the hub's, in every repo


def _spawn(m: Path, target: Path, hub, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "seeder", "-m", str(m), "-t", str(target), "--log-format", "json",
                             *extra], env=seeder_env(hub.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_all(procs) -> None:
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "Traceback" not in err


def _locked_manifest(hub, tmp_path: Path) -> Path:
    hub.add_repo("org/m", FILES)
    m = tmp_path / "models.toml"
    m.write_text('[[models]]\nname = "m"\nrepo = "org/m"\n')
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0
    hub.clear_log()
    hub.throttle_bps = 4 << 20  # long enough for the runs to overlap
    return m


def _intact(target: Path) -> None:
    for name, data in FILES.items():
        assert file_sha256(target / "m" / name) == sha256(data)


def test_four_seeders_on_one_target(hub, tmp_path):
    m = _locked_manifest(hub, tmp_path)
    _wait_all([_spawn(m, tmp_path / "t", hub) for _ in range(4)])
    assert hub.body_bytes() == sum(map(len, FILES.values()))
    _intact(tmp_path / "t")


def test_two_targets_on_one_shared_cache(hub, tmp_path):
    m = _locked_manifest(hub, tmp_path)
    cache = tmp_path / "cache"
    procs = [_spawn(m, tmp_path / t, hub, "--cache", str(cache)) for t in ("a", "a", "b", "b")]
    _wait_all(procs)
    assert hub.body_bytes() == sum(map(len, FILES.values()))
    _intact(tmp_path / "a")
    _intact(tmp_path / "b")


def test_a_seeder_waiting_for_another_one_says_so_at_once(hub, tmp_path):
    import fcntl
    import os
    import threading
    import time

    m = _locked_manifest(hub, tmp_path)
    target = tmp_path / "t"
    (target / ".seeder").mkdir(parents=True)
    fd = os.open(target / ".seeder" / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another seeder, as far as this one can tell
    lines: list[str] = []
    try:
        proc = _spawn(m, target, hub)
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 60  # a start-up on a loaded machine; "at once" is the line's own clock
        while time.monotonic() < deadline and not any("waiting for another seeder" in x for x in lines):
            time.sleep(0.05)
        said = [json.loads(x) for x in lines if "waiting for another seeder" in x]
        assert said and str(target) in said[0]["event"], lines
        assert said[0]["waited"] < WAIT_LOG_EVERY / 2, said[0]  # the first try said so, not the first reminder
        assert proc.poll() is None  # still waiting, not failed
    finally:
        os.close(fd)  # the other one is done
    assert proc.wait(timeout=120) == 0, lines
    reader.join(timeout=10)
    _intact(target)
