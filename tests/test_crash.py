"""SIGKILL at every step of a seed and of a refresh: the target always serves one complete version,
and the next run finishes with no manual cleanup."""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seeder.fetch.parts import READ
from seeder.fetch.stream import NET_CHUNK
from tests.conftest import blob, file_sha256, run_seeder, seeder_env, sha256, url_entry, write_manifest
from tests.fakehub import DEFAULT_GITATTRIBUTES

V1 = {".gitattributes": DEFAULT_GITATTRIBUTES, "config.json": b'{"v": 1}', "model.safetensors": blob(400_000, seed=31),
      "gone.txt": b"v1 only"}
V2 = {".gitattributes": DEFAULT_GITATTRIBUTES, "config.json": b'{"v": 2}', "model.safetensors": blob(400_000, seed=32),
      "new.bin": blob(30_000, seed=33)}
POINTS = ["downloaded", "before-rename:state.json", "recorded", "before-switch", "before-rename:complete"]


def _digests(target: Path) -> dict[str, str] | None:
    link = target / "m"
    if not link.exists():
        return None
    root = Path(os.path.realpath(link))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _kill_at(point: str, args: list[str], hub) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "seeder", *args, "--log-format", "json"],
                            env=seeder_env(hub.url, SEEDER_FAILPOINT=point), stderr=subprocess.PIPE)
    deadline, seen = time.monotonic() + 60, b""
    while time.monotonic() < deadline and f"failpoint {point}".encode() not in seen:
        ready, _, _ = select.select([proc.stderr], [], [], 1)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert f"failpoint {point}".encode() in seen, seen.decode(errors="replace")[-2000:]


def _repo_model(hub, tmp_path: Path) -> list[str]:
    """The repo at V1 and a manifest for it; returns the seeder arguments for manifest and target."""
    hub.add_repo("org/m", V1)
    m = tmp_path / "models.toml"
    m.write_text('[[models]]\nname = "m"\nrepo = "org/m"\n')
    return ["-m", str(m), "-t", str(tmp_path / "t")]


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_during_a_first_seed(point, hub, tmp_path):
    args = _repo_model(hub, tmp_path)
    _kill_at(point, args, hub)
    assert _digests(tmp_path / "t") in (None, {k: sha256(v) for k, v in V1.items()})
    run = run_seeder(*args, hub=hub)
    assert run.code == 0, run
    assert _digests(tmp_path / "t") == {k: sha256(v) for k, v in V1.items()}
    assert run_seeder("--verify", *args, hub=hub).code == 0


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_during_a_refresh(point, hub, tmp_path):
    args = _repo_model(hub, tmp_path)
    assert run_seeder(*args, hub=hub).code == 0
    hub.add_repo("org/m", V2)
    _kill_at(point, ["refresh", *args], hub)
    versions = ({k: sha256(v) for k, v in V1.items()}, {k: sha256(v) for k, v in V2.items()})
    assert _digests(tmp_path / "t") in versions
    run = run_seeder("refresh", *args, hub=hub)
    assert run.code == 0, run
    assert _digests(tmp_path / "t") == versions[1]
    assert run_seeder("--verify", *args, hub=hub).code == 0
    assert len(list((tmp_path / "t" / ".seeder" / "versions" / "m").iterdir())) == 1


def _covered(requests) -> list[list[int]]:
    """The byte ranges the hub sent, merged."""
    spans = []
    for r in requests:
        first = int(r.range.removeprefix("bytes=").split("-")[0]) if r.range else 0
        spans.append([first, first + r.bytes_sent])
    out: list[list[int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


@pytest.mark.parametrize("connections", ["1", "4"], ids=["one-stream", "parts"])
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_downloads_at_once_and_the_next_run_resumes(sig, code, connections, hub, tmp_path):
    data = blob(16_000_000, seed=41)
    url = hub.add_file("big.bin", data)
    m = write_manifest(tmp_path / "models.toml", url_entry("x", url, data))
    args = ["-m", str(m), "-t", str(tmp_path / "t")]
    hub.throttle_bps = 500_000  # per connection: the rest of the file takes many seconds
    n = int(connections)
    env = seeder_env(hub.url, SEEDER_CONNECTIONS=connections, SEEDER_PART_SIZE=str(1 << 20),
                     SEEDER_MULTIPART_MIN=str(1 << 20))
    proc = subprocess.Popen([sys.executable, "-m", "seeder", *args, "--log-format", "json"], env=env,
                            stderr=subprocess.PIPE, text=True)
    # Past the first save of the parts' sidecar (every 0.5 s): what it records is what a rerun keeps.
    started, deadline = time.monotonic(), time.monotonic() + 30
    while (hub.body_bytes() < 1_000_000 or time.monotonic() - started < 1.5) and time.monotonic() < deadline:
        time.sleep(0.05)
    arrived = hub.body_bytes()
    sent = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    took = time.monotonic() - sent
    assert proc.returncode == code, err
    # At once: in a fraction of what the downloads in flight would take to finish, a margin a loaded machine keeps.
    rest = (len(data) - arrived) / (hub.throttle_bps * n)
    assert took < rest / 2, f"took {took:.1f} s after the signal; the downloads would have ended in {rest:.1f} s"
    assert "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "t" / "x").exists()

    part = tmp_path / "t" / ".seeder" / "tmp" / f"sha256-{sha256(data)}.part"
    sidecar = part.with_name(part.name + ".ranges")
    kept = json.loads(sidecar.read_text())["done"] if n > 1 else [[0, part.stat().st_size]]
    on_disk = sum(b - a for a, b in kept)
    # What had arrived is on disk and recorded, but for the read each connection had in flight (and a
    # moment's sending).
    in_flight = NET_CHUNK if n == 1 else READ
    assert on_disk > 0 and arrived - on_disk <= n * (in_flight + hub.throttle_bps // 4), (arrived, on_disk, kept)

    hub.throttle_bps = None
    hub.clear_log()
    run = run_seeder(*args, env=env)  # the same download path, so the same layout of the partial
    assert run.code == 0, run
    assert file_sha256(tmp_path / "t" / "x" / "big.bin") == sha256(data)
    gets = [r for r in hub.requests if r.method == "GET"]
    if n == 1:
        assert [r.range for r in gets] == [f"bytes={on_disk}-"]
    else:
        missing, pos = [], 0
        for a, b in kept:
            missing += [[pos, a]] if a > pos else []
            pos = b
        assert _covered(gets) == missing + ([[pos, len(data)]] if pos < len(data) else [])
    assert hub.body_bytes() == len(data) - on_disk  # not a byte of what was on disk came again


def test_an_interrupted_parts_download_records_what_it_wrote(hub, tmp_path):
    """The parts' sidecar is saved on the signal, not only every half second: bytes already written are
    never left out of it, to be downloaded again by the next run."""
    data = blob(96_000_000, seed=42)
    url = hub.add_file("big.bin", data)
    m = write_manifest(tmp_path / "models.toml", url_entry("x", url, data))
    hub.throttle_bps = 4_000_000  # per connection: 16 MB/s in all, 8 MB between two periodic saves
    n = 4
    env = seeder_env(hub.url, SEEDER_CONNECTIONS=str(n), SEEDER_PART_SIZE=str(1 << 20),
                     SEEDER_MULTIPART_MIN=str(1 << 20))
    proc = subprocess.Popen([sys.executable, "-m", "seeder", "-m", str(m), "-t", str(tmp_path / "t"),
                             "--log-format", "json"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while hub.body_bytes() < 16_000_000 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err

    part = tmp_path / "t" / ".seeder" / "tmp" / f"sha256-{sha256(data)}.part"
    kept = json.loads(part.with_name(part.name + ".ranges").read_text())["done"]
    block, unrecorded = 64 << 10, 0
    with open(part, "rb") as fh:
        for start in range(0, len(data), block):
            end = min(start + block, len(data))
            if any(a <= start and end <= b for a, b in kept):
                continue
            fh.seek(start)
            unrecorded += end - start if fh.read(end - start) == data[start:end] else 0
    # Only what the connections wrote between the save and the exit: a read each, and a moment more.
    assert sum(b - a for a, b in kept) > 0 and unrecorded <= n * READ + (1 << 20), (unrecorded, kept)
