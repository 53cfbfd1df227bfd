"""Multi-part (Range, several connections) downloads: correct bytes, resume, fallback, faults.

A small part size (64 KiB) makes small files exercise every path; speed is the benchmark's business.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seeder import log
from seeder.fetch import partial as parts
from seeder.fetch.download import download
from seeder.fetch.partial import Downloaded
from seeder.fetch.transport import Client
from seeder.settings import Network, Parts
from seeder.errors import IntegrityError
from seeder.spec.lock import LockedFile
from tests.conftest import most_at_once, blob, run_seeder, seeder_env, sha256, url_entry

P = 64 << 10  # part size for these tests
MULTI = {"SEEDER_PART_SIZE": str(P), "SEEDER_MULTIPART_MIN": "1", "SEEDER_CONNECTIONS": "4"}
SIZES = [1, 2, P - 1, P, P + 1, 2 * P - 1, 2 * P, 2 * P + 1, 7 * P + 12_345, 40 * P + 1]


def _url_model(hub, name: str, data: bytes, path: str | None = None) -> str:
    return url_entry(name, hub.add_file(path or f"{name}/{name}.bin", data), data)


def _ranges(hub, match: str) -> list[tuple[int, int, int]]:
    """(first, last, status) of every GET for paths containing ``match``, in arrival order."""
    out = []
    for r in hub.requests:
        if r.method == "GET" and match in r.path:
            if r.range:
                first, _, last = r.range.removeprefix("bytes=").partition("-")
                out.append((int(first), int(last), r.status))
            else:
                out.append((0, -1, r.status))
    return out


def _covered(ranges: list[tuple[int, int, int]]) -> list[list[int]]:
    return parts.merge((a, b + 1) for a, b, status in ranges if status == 206)


def _part(target: Path, data: bytes) -> Path:
    return target / ".seeder" / "tmp" / f"sha256-{sha256(data)}.part"


def test_sizes_around_every_part_boundary(hub, tmp_path):
    files = {size: blob(size, seed=size) for size in SIZES}
    text = "".join(_url_model(hub, f"s{size}", data) for size, data in files.items())
    (tmp_path / "models.toml").write_text(text)
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), hub=hub, **MULTI)
    assert run.code == 0, run
    for size, data in files.items():
        assert (tmp_path / "t" / f"s{size}" / f"s{size}.bin").read_bytes() == data
        got = _ranges(hub, f"/s{size}/")
        assert all(status == 206 for _, _, status in got), got
        assert _covered(got) == [[0, size]], (size, got)  # every byte asked for once, none past the end
        assert sum(b - a + 1 for a, b, _ in got) == size
        assert max(b - a + 1 for a, b, _ in got) <= P
        assert len(got) >= -(-size // P)
    assert hub.body_bytes() == sum(SIZES)
    assert list((tmp_path / "t" / ".seeder" / "tmp").iterdir()) == []  # no partial, no sidecar
    summary = run.events[-1]
    assert summary["event"] == "summary" and summary["bytes_downloaded"] == sum(SIZES)


def test_repo_file_parts_go_to_the_cdn_without_the_token(hub, tmp_path):
    token = "hf_multipartSecret0123456789"
    hub.token = token
    data = blob(10 * P + 3, seed=11)
    commit = hub.add_repo("org/big", {"model.safetensors": data, "config.json": b"{}"}, gated=True)
    (tmp_path / "models.toml").write_text('[[models]]\nname = "m"\nrepo = "org/big"\n')
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), hub=hub, HF_TOKEN=token, **MULTI)
    assert run.code == 0, run
    assert (tmp_path / "t" / "m" / "model.safetensors").read_bytes() == data
    resolves = [r for r in hub.requests if r.kind == "resolve" and r.path.endswith("model.safetensors")]
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert len(resolves) == 1 and resolves[0].status == 302  # only the first part goes through the hub
    assert all(r.auth_value == f"Bearer {token}" for r in resolves)
    assert len(cdn) > 1 and not hub.cdn_saw_auth  # the token never reaches another host
    assert _covered(_ranges(hub, "model.safetensors")) == [[0, len(data)]]
    assert f"/org/big/resolve/{commit}/model.safetensors" == resolves[0].path


def _spawn(m: Path, target: Path, hub, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "seeder", "-m", str(m), "-t", str(target), "--log-format", "json"],
                            env=seeder_env(hub.url, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_then_resume_fetches_only_the_missing_ranges(hub, tmp_path):
    # Parts of 1 MiB at 1 MiB/s each, so several are half done at any moment (network reads are 256 KiB).
    data = blob(12 << 20, seed=21)
    (tmp_path / "models.toml").write_text(_url_model(hub, "m", data))
    target = tmp_path / "t"
    part = _part(target, data)
    side = parts.sidecar(part)
    hub.throttle_bps = 1 << 20
    env = MULTI | {"SEEDER_PART_SIZE": "1M"}
    proc = _spawn(tmp_path / "models.toml", target, hub, **env)
    seen: list[list[int]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            seen = json.loads(side.read_text())["done"]
        except (OSError, ValueError):
            seen = []
        if len(seen) >= 2 and sum(b - a for a, b in seen) >= len(data) // 4:
            break  # parts in flight stopped at different places
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(seen) >= 2, seen
    recorded = json.loads(side.read_text())["done"]  # what the next run starts from
    have = sum(b - a for a, b in recorded)
    assert len(data) // 4 <= have < len(data)
    assert part.stat().st_size == len(data)  # preallocated, written in place
    for a, b in recorded:  # what the sidecar claims is really there
        with open(part, "rb") as fh:
            fh.seek(a)
            assert fh.read(b - a) == data[a:b]
    assert not (target / "m").exists()

    hub.throttle_bps = None
    hub.clear_log()
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(target), hub=hub, **env)
    assert run.code == 0, run
    assert (target / "m" / "m.bin").read_bytes() == data
    fetched = _covered(_ranges(hub, "/m/"))
    missing = []
    cursor = 0
    for a, b in recorded:
        if a > cursor:
            missing.append([cursor, a])
        cursor = b
    if cursor < len(data):
        missing.append([cursor, len(data)])
    assert fetched == missing  # exactly the gaps: every part resumed where it stopped
    assert hub.body_bytes() == len(data) - have
    assert not part.exists() and not side.exists()


def test_server_ignoring_range_falls_back_to_one_stream(hub, tmp_path):
    data = blob(9 * P + 5, seed=31)
    (tmp_path / "models.toml").write_text(_url_model(hub, "m", data))
    hub.add_fault("/m/", "ignore_range", times=100)
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), hub=hub, **MULTI)
    assert run.code == 0, run
    assert (tmp_path / "t" / "m" / "m.bin").read_bytes() == data
    got = _ranges(hub, "/m/")
    assert [status for _, _, status in got] == [200, 200]  # the probe, then one whole stream
    assert any(e["event"].startswith("server ignores Range") for e in run.events)


def test_server_that_stops_honouring_range_midway_keeps_the_contiguous_head(hub, tmp_path):
    data = blob(30 * P, seed=32)
    (tmp_path / "models.toml").write_text(_url_model(hub, "m", data))
    hub.add_fault("/m/", "missing_headers", times=1)  # a harmless fault, so the next one skips the probe
    hub.add_fault("/m/", "ignore_range", times=1)
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), hub=hub, **MULTI)
    assert run.code == 0, run
    assert (tmp_path / "t" / "m" / "m.bin").read_bytes() == data
    [ignored] = [r for r in hub.requests if r.fault == "ignore_range"]
    assert ignored.range_start and ignored.status == 200 and hub.unfired_faults() == []  # a later part's


STRUCK = 13 * P + P // 3  # inside a part in the middle of the file: neither the probe nor the last
PART_FAULTS = {
    "reset": dict(kind="reset", at=STRUCK),
    "truncate": dict(kind="truncate", at=STRUCK),
    "stall": dict(kind="stall", at=STRUCK, seconds=30),
    "503": dict(kind="status", code=503),
    "wrong length": dict(kind="wrong_length", delta=100),
}


@pytest.mark.parametrize("fault", sorted(PART_FAULTS))
def test_a_fault_on_one_part_ends_verified(fault, hub, tmp_path):
    data = blob(24 * P + 7, seed=41)
    (tmp_path / "models.toml").write_text(_url_model(hub, "m", data))
    spec = dict(PART_FAULTS[fault])
    kind = spec.pop("kind")
    if "at" not in spec:
        hub.add_fault("/m/", "missing_headers", times=1)  # harmless: the probe gets it, the next part the fault
    hub.add_fault("/m/", kind, **spec)
    started = time.monotonic()
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), hub=hub, **MULTI)
    assert run.code == 0, run
    assert time.monotonic() - started < 30
    assert (tmp_path / "t" / "m" / "m.bin").read_bytes() == data
    assert hub.unfired_faults() == []
    if fault != "wrong length":  # a part is complete when its bytes are in, whatever the header claimed
        assert any(e["event"] == "retrying" for e in run.events)
    [faulted] = [r for r in hub.requests if r.fault and r.fault != "missing_headers"]
    assert faulted.fault == kind and faulted.range_start is not None
    if "at" in spec:
        part = faulted.range_start, faulted.range_start + P
        assert part[0] <= STRUCK < part[1] and faulted.fault_at == STRUCK
        # The part was asked for again from no earlier than its start (its reads end there), and only it.
        after = [r.range_start for r in hub.requests[hub.requests.index(faulted) + 1:] if r.range_start is not None]
        assert any(part[0] <= start <= STRUCK for start in after), (part, after)
        assert hub.body_bytes() <= len(data) + P
    else:
        assert hub.body_bytes() == len(data)  # the 503 carried none of the file's bytes


def test_corruption_in_one_part_is_caught_and_fetched_again(hub, tmp_path):
    data = blob(24 * P + 7, seed=42)
    (tmp_path / "models.toml").write_text(_url_model(hub, "m", data))
    hub.add_fault("/m/", "corrupt", offset=100)  # in the first part
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), hub=hub, **MULTI)
    assert run.code == 0, run
    assert (tmp_path / "t" / "m" / "m.bin").read_bytes() == data
    assert any(e["event"] == "checksum mismatch, downloading again" for e in run.events)
    assert [(r.fault, r.fault_at) for r in hub.requests if r.fault] == [("corrupt", 100)]


def test_corruption_twice_exits_1_and_nothing_lands(hub, tmp_path):
    data = blob(24 * P + 7, seed=43)
    (tmp_path / "models.toml").write_text(_url_model(hub, "m", data))
    hub.add_fault("/m/", "corrupt", times=1000, offset=100)  # every time the first part is sent
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), hub=hub, **MULTI)
    assert run.code == 1, run
    assert [(r.fault, r.fault_at) for r in hub.requests if r.fault] == [("corrupt", 100)] * 2
    assert sha256(data) in run.err and "expected" in run.err
    assert not (tmp_path / "t" / "m").exists()
    assert list((tmp_path / "t" / ".seeder" / "tmp").iterdir()) == []  # no partial, no sidecar


def test_persistent_5xx_on_parts_exits_3_in_bounded_time(hub, tmp_path):
    data = blob(24 * P, seed=44)
    (tmp_path / "models.toml").write_text(_url_model(hub, "m", data))
    hub.add_fault("/m/", "status", times=1000, code=503)
    started = time.monotonic()
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), hub=hub, **MULTI)
    assert run.code == 3 and "503" in run.err and "gave up after 4 attempts" in run.err, run
    assert time.monotonic() - started < 20
    assert not (tmp_path / "t" / "m").exists()


# -- in-process: partial layouts handed between the single-stream and multi-part paths ------------------


def _client(connections: int = 8, **net) -> Client:
    return Client(Network(**net), Parts(connections=connections, part_size=P, multipart_min=1))


def _download(hub, data: bytes, part: Path, **net) -> Downloaded:
    url = hub.add_file("x/file.bin", data)
    file = LockedFile(path="file.bin", size=len(data), sha256=sha256(data))
    client = _client(**(dict(endpoint=hub.url, attempts=3, backoff_max=0.1, read_timeout=2) | net))
    progress = log.Progress(len(data)).file("m", "file.bin", len(data))
    return download(client, [url], part, file, progress, "m")


def _prepared_partial(tmp_path: Path, data: bytes, ranges: list[list[int]]) -> Path:
    """A multi-part partial as a killed run leaves it: preallocated, some ranges written, a sidecar."""
    part = tmp_path / "file.part"
    buf = bytearray(b"\xee" * len(data))  # bytes outside the recorded ranges are garbage
    for a, b in ranges:
        buf[a:b] = data[a:b]
    part.write_bytes(bytes(buf))
    parts.save_ranges(part, LockedFile(path="file.bin", size=len(data), sha256=sha256(data)), ranges)
    return part


def test_single_stream_takes_over_a_multipart_partial_from_its_contiguous_head(hub, tmp_path):
    data = blob(20 * P, seed=51)
    part = _prepared_partial(tmp_path, data, [[0, 3 * P + 10], [8 * P, 9 * P]])
    result = _download(hub, data, part, connections=1)
    assert part.read_bytes() == data and result.sha256 == sha256(data)
    assert [(r.range, r.status) for r in hub.requests] == [(f"bytes={3 * P + 10}-", 206)]
    assert result.fetched == len(data) - (3 * P + 10)
    assert not parts.sidecar(part).exists()


def test_multipart_takes_over_a_single_stream_prefix(hub, tmp_path):
    data = blob(20 * P, seed=52)
    part = tmp_path / "file.part"
    part.write_bytes(data[: 5 * P + 3])
    result = _download(hub, data, part, connections=4)
    assert part.read_bytes() == data and result.fetched == len(data) - (5 * P + 3)
    assert _covered(_ranges(hub, "file.bin")) == [[5 * P + 3, len(data)]]


def test_resume_from_sidecar_in_process(hub, tmp_path):
    data = blob(20 * P + 1, seed=53)
    recorded = [[0, P + 5], [4 * P, 6 * P - 1], [19 * P, 20 * P + 1]]
    part = _prepared_partial(tmp_path, data, recorded)
    result = _download(hub, data, part, connections=4)
    assert part.read_bytes() == data
    assert _covered(_ranges(hub, "file.bin")) == [[P + 5, 4 * P], [6 * P - 1, 19 * P]]
    assert result.fetched == len(data) - sum(b - a for a, b in recorded)


@pytest.mark.parametrize("sidecar_text", ["not json", '{"version": 1, "size": 5, "digest": "x", "done": [[0, 5]]}',
                                          '{"version": 1, "done": [["a", 1]]}'])
def test_an_unusable_sidecar_means_starting_over(sidecar_text, hub, tmp_path):
    data = blob(10 * P, seed=54)
    part = tmp_path / "file.part"
    part.write_bytes(b"\xee" * len(data))
    parts.sidecar(part).write_text(sidecar_text)
    result = _download(hub, data, part, connections=4)
    assert part.read_bytes() == data and result.fetched == len(data)


def test_a_sidecar_claiming_more_than_the_partial_holds_is_clipped(hub, tmp_path):
    data = blob(10 * P, seed=55)
    part = _prepared_partial(tmp_path, data, [[0, 10 * P]])
    with open(part, "r+b") as fh:
        fh.truncate(2 * P)  # as if killed after the sidecar was written, before the file grew
    result = _download(hub, data, part, connections=4)
    assert part.read_bytes() == data and result.fetched == 8 * P


def test_wrong_bytes_in_recorded_ranges_are_caught_then_refetched(hub, tmp_path):
    data = blob(10 * P, seed=56)
    part = _prepared_partial(tmp_path, data, [[0, 4 * P]])
    with open(part, "r+b") as fh:  # e.g. a power cut lost what the sidecar recorded
        fh.seek(P)
        fh.write(b"\0" * 100)
    result = _download(hub, data, part, connections=4)
    assert part.read_bytes() == data and result.sha256 == sha256(data)
    assert result.fetched == len(data)  # the second attempt starts from scratch


def test_server_with_a_different_size_is_an_integrity_error(hub, tmp_path):
    data = blob(10 * P, seed=57)
    hub.add_file("x/file.bin", data[:-1])  # the server's file is one byte short of the lock's
    file = LockedFile(path="file.bin", size=len(data), sha256=sha256(data))
    client = _client(endpoint=hub.url, attempts=2, backoff_max=0.1)
    progress = log.Progress(len(data)).file("m", "file.bin", len(data))
    part = tmp_path / "file.part"
    with pytest.raises(IntegrityError, match="expected"):
        download(client, [f"{hub.url}/files/x/file.bin"], part, file, progress, "m")
    assert not part.exists() and not parts.sidecar(part).exists()


def test_zero_copy_throttled_server_serves_identical_ranges(hub, tmp_path):
    data = blob(12 * P + 9, seed=58)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    hub.zero_copy = True
    hub.throttle_bps = 8 << 20
    hub.throttle_total_bps = 16 << 20
    url = hub.add_file("x/file.bin", src)
    file = LockedFile(path="file.bin", size=len(data), sha256=sha256(data))
    client = _client(connections=4, endpoint=hub.url)
    progress = log.Progress(len(data)).file("m", "file.bin", len(data))
    part = tmp_path / "file.part"
    assert download(client, [url], part, file, progress, "m").sha256 == sha256(data)
    assert part.read_bytes() == data


def test_idle_connections_take_over_the_rest_of_a_stalled_part(hub, tmp_path):
    # 8 MiB parts: the first round hands out [0, 2M), [2M, 6M), [6M, 12M), [12M, 20M) in file order. The
    # part at 12 MiB stalls before its first byte; the read timeout (60 s) is far longer than the test
    # waits, so only idle connections taking over its upper half can fetch those bytes. Once one has, the
    # stall is released and the run ends; a machine however slow only makes the wait longer.
    data = blob(32 << 20, seed=61)
    (tmp_path / "models.toml").write_text(_url_model(hub, "m", data))
    stalled_at, stalled_end = 12 << 20, 20 << 20
    stall = hub.add_fault("/m/", "stall", at=stalled_at, seconds=600)
    proc = _spawn(tmp_path / "models.toml", tmp_path / "t", hub,
                  **(MULTI | {"SEEDER_PART_SIZE": "8M", "SEEDER_READ_TIMEOUT": "60"}))
    deadline = time.monotonic() + 30
    taken_over: list[int] = []
    while not taken_over and time.monotonic() < deadline and proc.poll() is None:
        taken_over = [r.range_start for r in hub.requests
                      if r.range_start is not None and stalled_at < r.range_start < stalled_end]
        time.sleep(0.05)
    stall.release()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert (tmp_path / "t" / "m" / "m.bin").read_bytes() == data
    [struck] = [r for r in hub.requests if r.fault == "stall"]
    assert (struck.range_start, struck.fault_at) == (stalled_at, stalled_at)
    assert taken_over, "no connection took over the stalled part"
    # A split part's connection is closed at the split: what was in flight beyond it is lost, no more.
    assert hub.body_bytes() < 1.5 * len(data)


def test_the_connections_flag_bounds_the_parts_in_flight(hub, tmp_path):
    data = blob(3 << 20, seed=71)
    m = tmp_path / "models.toml"
    m.write_text(_url_model(hub, "m", data))
    hub.throttle_bps = 1 << 20  # a quarter second per part
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), "--connections", "3", hub=hub,
                     SEEDER_PART_SIZE=str(256 << 10), SEEDER_MULTIPART_MIN="1")
    assert run.code == 0, run
    assert (tmp_path / "t" / "m" / "m.bin").read_bytes() == data
    # Never more than asked for; and more than one: the parts really overlapped.
    assert 2 <= most_at_once([r for r in hub.requests if r.kind == "files" and r.range]) <= 3
