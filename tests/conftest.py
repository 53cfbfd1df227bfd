from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.fakehub import FakeHub
from tests.seaweed import seaweed, seaweed_cluster  # noqa: F401  (fixtures: a real SeaweedFS)

ROOT = Path(__file__).resolve().parent.parent

# Short timeouts and backoff so fault tests finish in seconds; the behaviour is the same as with defaults.
FAST_NET = {
    "SEEDER_RETRIES": "3",  # 4 attempts
    "SEEDER_BACKOFF_MAX": "0.3",
    "SEEDER_READ_TIMEOUT": "2",
    "SEEDER_CONNECT_TIMEOUT": "2",
    "SEEDER_GRACE": "0",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible-looking bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest() * 64
        counter += 1
    return bytes(out[:size])


class Run:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    @property
    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.err.splitlines() if line.startswith("{")]

    def __repr__(self) -> str:
        return f"Run(code={self.code}, err={self.err[-2000:]!r})"


def seeder_env(hub_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "SEEDER_")) and k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")}
    env.update(FAST_NET)
    env["HF_HOME"] = "/nonexistent-hf-home"  # never pick up a developer's real token
    if hub_url:
        env["HF_ENDPOINT"] = hub_url
    env.update(extra)
    return env


def run_seeder(*args: str, hub: FakeHub | None = None, cwd: Path | None = None, timeout: float = 120,
               env: dict[str, str] | None = None, **extra_env: str) -> Run:
    env = env or seeder_env(hub.url if hub else None, **extra_env)
    fmt = [] if "--help" in args or "-h" in args else ["--log-format", "json"]
    proc = subprocess.run([sys.executable, "-m", "seeder", *args, *fmt], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    run = Run(proc)
    assert "Traceback" not in run.err, run.err
    return run


def most_at_once(records, settle: float = 0.05) -> int:
    """The largest number of the hub's logged requests in flight at one moment.

    The server logs a request as finished a moment after the client has its last byte and may have sent
    the next request, so each one counts as ending ``settle`` seconds early; keep requests longer than that.
    """
    records = [r for r in records if r.finished is not None]  # still being logged
    edges = sorted([(r.started, 1) for r in records] + [(r.finished - settle, -1) for r in records])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def url_entry(name: str, url: str, data: bytes) -> str:
    """A manifest's ``[[models]]`` entry for ``url``, pinned to ``data``'s sha256 and size."""
    return f'[[models]]\nname = "{name}"\nurl = "{url}"\nsha256 = "{sha256(data)}"\nsize = {len(data)}\n'


def write_manifest(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def hub():
    with FakeHub() as h:
        yield h


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def other_fs(tmp_path: Path):
    """A fresh directory on another filesystem than ``tmp_path``: under ``SEEDER_TEST_OTHER_FS`` (CI mounts a
    tmpfs there), else under /dev/shm when that is one; skips without either."""
    if base := os.environ.get("SEEDER_TEST_OTHER_FS"):
        if not Path(base).is_dir() or Path(base).stat().st_dev == tmp_path.stat().st_dev:
            pytest.fail(f"SEEDER_TEST_OTHER_FS={base} is not a directory on another filesystem than {tmp_path}")
    elif Path("/dev/shm").is_dir() and Path("/dev/shm").stat().st_dev != tmp_path.stat().st_dev:
        base = "/dev/shm"
    else:
        pytest.skip("needs a second filesystem: set SEEDER_TEST_OTHER_FS to a directory on one")
    path = Path(tempfile.mkdtemp(prefix="seeder-test-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With SEEDER_REQUIRE_ALL=1 (CI), a skip is a failure: CI has root, mounts and a second filesystem, so a
    test that skips there is a test that silently stopped running."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("SEEDER_REQUIRE_ALL") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"SEEDER_REQUIRE_ALL=1 but it skipped: {reason}"
