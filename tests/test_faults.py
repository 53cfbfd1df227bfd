"""Faults on the wire: each ends in a verified file or the documented exit code, in bounded time,
with nothing bad ever at a final path."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from tests.conftest import blob, file_sha256, run_seeder, seeder_env, sha256, url_entry, write_manifest
from tests.fakehub import DEFAULT_GITATTRIBUTES

SIZE = 400_000
DATA = blob(SIZE, seed=42)


def _manifest(tmp_path: Path, hub, source: str) -> tuple[Path, Path, str]:
    """A one-file model of the given source kind; returns manifest, final file path, and the URL path to fault."""
    if source == "repo":
        hub.add_repo("org/m", {"weights.safetensors": DATA})
        text = '[[models]]\nname = "m"\nrepo = "org/m"\n'
        final = tmp_path / "t" / "m" / "weights.safetensors"
    else:
        url = hub.add_file("dl/weights.gguf", DATA)
        text = url_entry("m", url, DATA)
        final = tmp_path / "t" / "m" / "weights.gguf"
    m = tmp_path / "models.toml"
    m.write_text(text)
    return m, final, "weights"


# Every fault on both transfer paths: one stream, and Range parts over several connections.
MODES = {
    "single": {"SEEDER_CONNECTIONS": "1"},
    "multi": {"SEEDER_PART_SIZE": "64K", "SEEDER_MULTIPART_MIN": "1", "SEEDER_CONNECTIONS": "4"},
}
# What a connection reads at a time (fetch/stream.py NET_CHUNK, fetch/parts.py READ): a read cut short is
# lost, so a resume may start up to this far before the byte a fault struck at. A part's reads stop at its
# end, so with 64 KiB parts the faulted part is fetched again from no earlier than its own start.
READ = {"single": 64 << 10, "multi": 256 << 10}


def _ok(final: Path) -> None:
    assert final.read_bytes() == DATA


# Faults that cut or change a body name the file offset they strike at: a Range part that does not
# carry that byte is served intact, and the part that does gets the fault there.
RECOVERABLE = {
    "reset mid-body": dict(kind="reset", at=SIZE // 2),
    "clean close before Content-Length": dict(kind="truncate", at=SIZE // 3),
    "500 502 503 then success": (500, 502, 503),  # different statuses, one after the other
    "408 425 then success": (408, 425),
    "429 Retry-After seconds": dict(kind="status", code=429, headers={"Retry-After": "1"}),
    "429 Retry-After http-date": dict(kind="status", code=429, headers={"Retry-After": "http-date in 2 s"}),
    "stall longer than the read timeout": dict(kind="stall", at=SIZE // 4, seconds=30),
    "corrupted bytes of the right length": dict(kind="corrupt", offset=SIZE // 2),
    "wrong Content-Length": dict(kind="wrong_length", delta=100),
}


def _content(hub, match: str) -> list:
    """GETs of the file that were answered with bytes (hub or CDN), in arrival order."""
    return [r for r in hub.requests if r.method == "GET" and match in r.path and r.status in (200, 206)]


def _assert_resumed_near(hub, match: str, kind: str, at: int, read: int) -> None:
    """The fault struck at byte ``at``, and a later request took up from there (within one read), not from 0."""
    content = _content(hub, match)
    [struck] = [r for r in content if r.fault == kind]
    assert struck.fault_at == at, struck
    first = struck.range_start or 0
    later = [r.range_start for r in content[content.index(struck) + 1:] if r.range_start is not None]
    assert any(max(first, at - read) <= start <= at for start in later), (at, first, later)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("source", ["repo", "url"])
@pytest.mark.parametrize("fault", sorted(RECOVERABLE))
def test_recoverable_fault_ends_verified(fault, source, mode, hub, tmp_path):
    m, final, match = _manifest(tmp_path, hub, source)
    if isinstance(RECOVERABLE[fault], tuple):
        for code in RECOVERABLE[fault]:
            hub.add_fault(match, "status", code=code)
        kind = "status"
    else:
        spec = dict(RECOVERABLE[fault])
        if spec.get("headers", {}).get("Retry-After", "").startswith("http-date"):
            spec["headers"] = {"Retry-After": formatdate(time.time() + 2, usegmt=True)}
        kind = spec.pop("kind")
        hub.add_fault(match, kind, **spec)
    started = time.monotonic()
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, timeout=60, **MODES[mode])
    assert run.code == 0, run
    _ok(final)
    assert time.monotonic() - started < 30
    assert hub.unfired_faults() == [], "a fault never fired"
    added = len(RECOVERABLE[fault]) if isinstance(RECOVERABLE[fault], tuple) else 1
    assert [r.fault for r in hub.requests if r.fault] == [kind] * added  # each fired once, nothing else did
    served = hub.body_bytes(match)
    if kind in ("reset", "truncate", "stall"):
        _assert_resumed_near(hub, match, kind, RECOVERABLE[fault]["at"], READ[mode])
        assert served <= SIZE + READ[mode]  # what was cut short, and no more, came twice
    elif kind == "corrupt":
        [struck] = [r for r in _content(hub, match) if r.fault]
        assert struck.fault_at == SIZE // 2
        assert any(e["event"] == "checksum mismatch, downloading again" for e in run.events)
        assert SIZE < served <= 2 * SIZE  # the file once more, from scratch
    elif kind == "wrong_length":
        assert served <= 2 * SIZE
    else:
        assert served == SIZE  # an error status carries no byte of the file
        assert any(e["event"] == "retrying" for e in run.events)
    if "Retry-After" in fault:
        assert any(e["event"] == "retrying" and e["wait"] >= 0.5 for e in run.events)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("source", ["repo", "url"])
def test_range_ignored_on_resume_restarts_cleanly(source, mode, hub, tmp_path):
    m, final, match = _manifest(tmp_path, hub, source)
    reset = hub.add_fault(match, "reset", at=SIZE // 2)
    hub.add_fault(match, "ignore_range", following=reset)  # the request after the reset: the resume
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, **MODES[mode])
    assert run.code == 0, run
    _ok(final)
    assert hub.unfired_faults() == []
    [ignored] = [r for r in hub.requests if r.fault == "ignore_range"]
    assert ignored.range_start and ignored.status == 200  # asked to resume, got the whole file instead


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("source", ["repo", "url"])
def test_corruption_twice_exits_1_and_nothing_lands(source, mode, hub, tmp_path):
    m, final, match = _manifest(tmp_path, hub, source)
    hub.add_fault(match, "corrupt", times=100, offset=0)  # every request covering byte 0
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, **MODES[mode])
    assert run.code == 1, run
    assert [(r.fault, r.fault_at) for r in hub.requests if r.fault] == [("corrupt", 0)] * 2  # both downloads
    message = [e for e in run.events if e["level"] == "error"][-1]["event"]
    assert f"m/{final.name}" in message and sha256(DATA) in message and "expected" in message
    actual = re.search(r"sha256 ([0-9a-f]{64}), expected", message)
    assert actual and actual.group(1) != sha256(DATA)  # and what arrived instead
    assert not final.exists()
    assert not list((tmp_path / "t" / ".seeder" / "tmp").glob("*.part"))


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("source", ["repo", "url"])
def test_persistent_5xx_exits_3_in_bounded_time(source, mode, hub, tmp_path):
    m, final, match = _manifest(tmp_path, hub, source)
    hub.add_fault(match, "status", times=100, code=503)
    started = time.monotonic()
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, **MODES[mode])
    assert run.code == 3 and "503" in run.err and "gave up after 4 attempts" in run.err
    assert time.monotonic() - started < 20
    assert not final.exists()


def test_garbage_json_from_the_hub_api_exits_3(hub, tmp_path):
    m, final, _ = _manifest(tmp_path, hub, "repo")
    hub.add_fault("/api/models", "garbage_json", api=True, times=100)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 3 and "invalid response" in run.err


def test_server_that_never_answers_exits_3_in_bounded_time(tmp_path):
    # Accepts connections at the kernel level, never reads or answers: only timeouts end this.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    port = silent.getsockname()[1]
    try:
        (tmp_path / "models.toml").write_text(
            f'[[models]]\nname = "m"\nurl = "http://127.0.0.1:{port}/x.bin"\nsha256 = "{"0" * 64}"\nsize = 10\n')
        started = time.monotonic()
        run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"),
                         env=seeder_env(None, SEEDER_READ_TIMEOUT="1", SEEDER_RETRIES="1"))
        assert run.code == 3 and "Timeout" in run.err
        assert time.monotonic() - started < 15
    finally:
        silent.close()


def _spawn(m: Path, target: Path, hub, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "seeder", "-m", str(m), "-t", str(target), "--log-format", "json",
                             *extra], env=seeder_env(hub.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_resume_after_sigkill_refetches_well_under_the_whole_file(hub, tmp_path):
    big = blob(8 << 20, seed=7)
    url = hub.add_file("big/model.gguf", big)
    m = write_manifest(tmp_path / "models.toml", url_entry("m", url, big))
    hub.throttle_bps = 4 << 20
    proc = _spawn(m, tmp_path / "t", hub)
    part = tmp_path / "t" / ".seeder" / "tmp" / f"sha256-{sha256(big)}.part"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < len(big) // 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert part.stat().st_size >= len(big) // 2
    assert not (tmp_path / "t" / "m").exists()  # nothing visible yet
    hub.throttle_bps = None
    hub.clear_log()
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 0, run
    assert (tmp_path / "t" / "m" / "model.gguf").read_bytes() == big
    assert hub.body_bytes() < 0.6 * len(big)


def test_two_concurrent_seeders_both_succeed_and_fetch_once(hub, tmp_path):
    files = {f"shard-{i}.safetensors": blob(1 << 20, seed=i) for i in range(4)}
    hub.add_repo("org/m", files)
    m = tmp_path / "models.toml"
    m.write_text('[[models]]\nname = "m"\nrepo = "org/m"\n')
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0
    hub.clear_log()
    hub.throttle_bps = 8 << 20
    procs = [_spawn(m, tmp_path / "t", hub) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert "Traceback" not in err
    # Each byte once, the .gitattributes both repos' seeders list included.
    assert hub.body_bytes() == sum(len(d) for d in files.values()) + len(DEFAULT_GITATTRIBUTES)
    for name, data in files.items():
        assert file_sha256(tmp_path / "t" / "m" / name) == sha256(data)


@pytest.mark.parametrize("code", [401, 403, 404])
@pytest.mark.parametrize("source", ["repo", "url"])
def test_client_errors_are_not_retried(code, source, hub, tmp_path):
    m, final, match = _manifest(tmp_path, hub, source)
    hub.add_fault(match, "status", times=100, code=code)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, SEEDER_CONNECTIONS="1")
    assert run.code == 3 and f"HTTP {code}" in run.err, run
    assert len([r for r in hub.requests if r.method == "GET" and r.fault]) == 1  # asked once, not retried
    assert not any(e["event"] == "retrying" for e in run.events)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_server_with_more_bytes_than_the_lock_says_gets_no_byte_past_its_size(mode, hub, tmp_path):
    declared = SIZE // 2
    url = hub.add_file("dl/longer.bin", DATA)  # the lock says half of what the server has
    m = write_manifest(tmp_path / "models.toml", url_entry("m", url, DATA[:declared]).replace(
        f"size = {len(DATA[:declared])}", f"size = {declared}"))
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, **MODES[mode])
    assert run.code == 1, run
    assert str(declared) in run.err
    assert not (tmp_path / "t" / "m").exists()
    assert all(p.stat().st_size <= declared for p in (tmp_path / "t").rglob("*") if p.is_file())


def test_a_small_repo_file_is_checked_against_its_git_blob_id(hub, tmp_path):
    hub.add_repo("org/m", {"config.json": b'{"hidden_size": 384, "layers": 6}' * 20})
    m = write_manifest(tmp_path / "models.toml", '[[models]]\nname = "m"\nrepo = "org/m"\n')
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0
    entry = {f["path"]: f for f in json.loads((tmp_path / "models.lock").read_text())["models"][0]["files"]}["config.json"]
    assert entry.get("git_oid") and not entry.get("sha256")  # not LFS: the hub gives its git blob id only
    hub.add_fault("config.json", "corrupt", times=100)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 1 and "git blob id" in run.err, run
    assert not (tmp_path / "t" / "m").exists()


def test_a_server_that_never_accepts_the_connection_hits_the_connect_timeout(tmp_path):
    # A full accept queue: the kernel drops further SYNs, so connect() itself hangs.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.2)
    try:
        m = write_manifest(tmp_path / "models.toml",
                           f'[[models]]\nname = "m"\nurl = "http://127.0.0.1:{port}/x.bin"\nsha256 = "{"0" * 64}"\n'
                           "size = 10\n")
        started = time.monotonic()
        run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"),
                         env=seeder_env(None, SEEDER_CONNECT_TIMEOUT="1", SEEDER_READ_TIMEOUT="60", SEEDER_RETRIES="1"))
        elapsed = time.monotonic() - started
    finally:
        for c in fillers:
            c.close()
        server.close()
    assert run.code == 3 and "timed out" in run.err, run
    assert elapsed < 20  # the read timeout (60 s) never came into it


def test_retry_after_is_honoured_up_to_a_cap():
    from seeder.fetch.retry import RETRY_AFTER_MAX, retry_after as _retry_after

    assert _retry_after("7") == 7.0
    assert _retry_after("100000") == RETRY_AFTER_MAX
    assert _retry_after(formatdate(time.time() + 10 * RETRY_AFTER_MAX, usegmt=True)) == RETRY_AFTER_MAX
    assert _retry_after(formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert _retry_after("soon") is None


@pytest.mark.parametrize("retries, attempts", [("0", 1), ("1", 2), ("2", 3)])
def test_seeder_retries_counts_retries_not_attempts(retries, attempts, hub, tmp_path):
    data = blob(10_000, seed=90)
    url = hub.add_file("r/w.bin", data)
    m = write_manifest(tmp_path / "models.toml", url_entry("w", url, data))
    hub.add_fault("w.bin", "status", times=10, code=503)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), env=seeder_env(hub.url, SEEDER_RETRIES=retries))
    assert run.code == 3 and f"gave up after {attempts} attempts" in run.err, run
    assert len([r for r in hub.requests if r.kind == "files"]) == attempts


def test_an_unreachable_host_is_named_in_words_and_given_up_on_once(tmp_path):
    files = {f"f{i}": blob(1_000, seed=91 + i) for i in range(5)}
    text = "".join(url_entry(name, f"http://127.0.0.1:9/{name}.bin", data) for name, data in files.items())
    m = write_manifest(tmp_path / "models.toml", text)
    started = time.monotonic()
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), "--jobs", "1", env=seeder_env(None))
    assert run.code == 3 and "connection refused by 127.0.0.1:9" in run.err, run
    assert "ConnectionRefusedError" not in run.err
    retried = [e for e in run.events if e["event"] == "retrying"]
    assert len(retried) == 3, retried  # one file's retries (4 attempts); the other four fail at once
    assert sum("gave up on 127.0.0.1:9 earlier in this run" in e.get("error", "") for e in run.events) == 4
    assert time.monotonic() - started < 30


def test_a_host_that_cannot_be_resolved_is_named_in_words(tmp_path):
    # A network namespace of its own has no route to any resolver: the lookup fails at once and no
    # packet leaves the machine.
    import shutil

    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) for a network namespace without a resolver")
    files = {f"f{i}": blob(1_000, seed=95 + i) for i in range(3)}
    text = "".join(url_entry(n, f"https://huggingface.co/org/m/resolve/main/{n}.bin", d) for n, d in files.items())
    m = write_manifest(tmp_path / "models.toml", text)
    proc = subprocess.run(["unshare", "-n", sys.executable, "-m", "seeder", "-m", str(m), "-t", str(tmp_path / "t"),
                           "--jobs", "1", "--log-format", "json"], env=seeder_env(None), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3 and "cannot resolve host huggingface.co" in proc.stderr, proc.stderr
    assert "gaierror" not in proc.stderr
    assert proc.stderr.count("gave up on huggingface.co earlier in this run") == 2
