"""What another process reading a model's files sees while seeder writes them: one complete version or
the other, never a missing file in between, never a partial or mixed file, at any final path.

The reader is a real second process opening and reading the paths in a tight loop, as an app would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seeder.spec import lock as lockfile
from tests.conftest import blob, run_seeder, url_entry, write_manifest

READER = r"""
import json, os, sys, threading

config = json.loads(sys.argv[1])
versions = {name: open(path, "rb").read() for name, path in config["versions"].items()}
sizes = {len(v) for v in versions.values()}
paths = config["paths"]
seen = {p: [] for p in paths}  # per path, the states in the order seen, repeats collapsed
counts = {}
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()


whole = {}  # files already read whole, by identity: reading a large one again would slow the loop


def look(path):
    try:
        fh = open(path, "rb", buffering=0)
    except FileNotFoundError:
        return "missing"
    with fh:
        st = os.fstat(fh.fileno())
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key in whole:
            return whole[key]
        if st.st_size not in sizes:  # as an app mapping the file sees it, even while a writer extends it
            return f"{st.st_size} other bytes"
        data = fh.read(st.st_size)
    for name, want in versions.items():
        if data == want:
            whole[key] = name
            return name
    return f"{len(data)} other bytes"


def record(path):
    state = look(path)
    counts[state] = counts.get(state, 0) + 1
    if not seen[path] or seen[path][-1] != state:
        seen[path].append(state)


for path in paths:
    record(path)
print("ready", flush=True)
while not stop.is_set():
    for path in paths:
        record(path)
for path in paths:  # the writer is done: the last state is there to see
    record(path)
print(json.dumps({"seen": seen, "counts": counts}), flush=True)
"""


class Reader:
    """A second process polling ``paths`` until stopped; ``versions``: name -> the exact bytes of a version."""

    def __init__(self, tmp_path: Path, paths: list[Path], versions: dict[str, bytes]):
        files = {}
        for name, data in versions.items():
            files[name] = str(tmp_path / f"expected-{name}")
            Path(files[name]).write_bytes(data)
        config = {"paths": [str(p) for p in paths], "versions": files}
        self.proc = subprocess.Popen([sys.executable, "-c", READER, json.dumps(config)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline() == "ready\n"

    def stop(self) -> dict:
        out, _ = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0
        return json.loads(out)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def readers():
    started: list[Reader] = []
    yield lambda *args: started.append(Reader(*args)) or started[-1]
    for reader in started:
        reader.kill()


def _url_model(hub, tmp_path: Path, data: bytes, where: str) -> Path:
    """Model ``m`` as one file ``w.bin``, served from ``where``; the same file name in every version."""
    url = hub.add_file(f"{where}/w.bin", data)
    return write_manifest(tmp_path / "models.toml", url_entry("m", url, data) + 'filename = "w.bin"\n')


SMALL_A, SMALL_B = blob(4096, seed=71), blob(4096, seed=72)
SWITCHES = 16


def test_a_refresh_switches_readers_from_one_complete_version_to_the_next(hub, tmp_path, readers):
    # Small files keep the reader's loop tight: a gap of microseconds between two versions is what it looks for.
    versions = {"A": SMALL_A, "B": SMALL_B}
    target = tmp_path / "t"
    m = _url_model(hub, tmp_path, SMALL_A, "A")
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    reader = readers(tmp_path, [target / "m" / "w.bin"], versions)
    for i in range(1, SWITCHES + 1):
        name = "AB"[i % 2]
        _url_model(hub, tmp_path, versions[name], name)
        # A short grace: the reader resolved the link an instant ago, so its old version must outlive that instant.
        run = run_seeder("refresh", "--grace", "0.2", "-m", str(m), "-t", str(target), hub=hub)
        assert run.code == 0, run
    result = reader.stop()
    seen = result["seen"][str(target / "m" / "w.bin")]
    assert set(result["counts"]) <= {"A", "B"}, result["counts"]  # never missing, never other bytes
    # It did see the switches: each new version stays for a whole run's start-up, missing half would take a stall.
    assert seen[0] == "A" and seen[-1] == "AB"[SWITCHES % 2] and len(seen) - 1 >= SWITCHES // 2, seen


BIG = blob(32 << 20, seed=73)
"""Large enough that writing it in place would take milliseconds: a reader would catch it half-written."""


ROUNDS = 3
"""Each round is one chance for the reader to land in a write: a few make a miss unlikely."""


@pytest.mark.parametrize("cache", [False, True], ids=["no-cache", "cache"])
def test_a_first_seed_shows_no_partial_file_at_any_final_path(cache, hub, tmp_path, readers):
    m = _url_model(hub, tmp_path, BIG, "big")
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0
    model = lockfile.read(tmp_path / "models.lock").models[0]
    for i in range(ROUNDS):
        target, store = tmp_path / f"t{i}", tmp_path / f"cache{i}"
        extra = ["--cache", str(store)] if cache else []
        final = target / ".seeder" / "versions" / "m" / model.version / "w.bin"
        paths = [final, target / "m" / "w.bin"] + ([store / "blobs" / model.files[0].digest] if cache else [])
        reader = readers(tmp_path, paths, {"B": BIG})
        run = run_seeder("-m", str(m), "-t", str(target), *extra, hub=hub)
        assert run.code == 0, run
        result = reader.stop()
        assert set(result["counts"]) <= {"missing", "B"}, result["counts"]
        assert all(result["seen"][str(p)] == ["missing", "B"] for p in paths), result["seen"]


@pytest.mark.parametrize("cache", [False, True], ids=["no-cache", "cache"])
def test_a_file_restored_in_a_published_version_appears_whole(cache, hub, tmp_path, readers):
    # The one place bytes land beneath a published link: a file of the installed version went missing.
    m = _url_model(hub, tmp_path, BIG, "big")
    target = tmp_path / "t"
    extra = ["--cache", str(tmp_path / "cache")] if cache else []
    assert run_seeder("-m", str(m), "-t", str(target), *extra, hub=hub).code == 0
    visible = target / "m" / "w.bin"
    for _ in range(ROUNDS):
        visible.unlink()
        reader = readers(tmp_path, [visible], {"B": BIG})
        run = run_seeder("-m", str(m), "-t", str(target), *extra, hub=hub)
        assert run.code == 0, run
        result = reader.stop()
        assert set(result["counts"]) <= {"missing", "B"}, result["counts"]
        assert result["seen"][str(visible)] == ["missing", "B"], result["seen"]
