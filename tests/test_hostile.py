"""Hostile input: fuzzed locks, unsafe paths and sizes from a server, planted symlinks, redirect loops."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seeder.spec import lock as lockfile
from seeder.errors import LockError
from tests.conftest import blob, file_sha256, run_seeder, sha256

COMMIT = "c" * 40

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
file_entry = st.fixed_dictionaries({}, optional={
    "path": st.text(max_size=20) | st.sampled_from(["a", "../x", "/etc/passwd", "a\\b", "a\0b", "ok/file"]),
    "size": st.integers(min_value=-5, max_value=2**70) | st.text(max_size=3),
    "sha256": st.text(alphabet="0123456789abcdefg", min_size=63, max_size=65),
    "git_oid": st.text(alphabet="0123456789abcdef", min_size=39, max_size=41),
})
model_entry = st.fixed_dictionaries({}, optional={
    "name": st.text(max_size=12) | st.just("ok"),
    "fingerprint": st.text(max_size=5),
    "kind": st.sampled_from(["repo", "url", "other"]),
    "repo": st.text(max_size=10), "revision": st.text(max_size=5),
    "commit": st.just(COMMIT) | st.text(max_size=5),
    "urls": st.lists(st.text(max_size=10), max_size=2) | json_values,
    "files": st.lists(file_entry, max_size=3) | json_values,
})


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({"version": st.just(1) | json_values, "models": st.lists(model_entry, max_size=3) | json_values}))
def test_any_lock_gives_a_lock_or_a_lock_error(data):
    try:
        parsed = lockfile.parse(data, "fuzz.lock")
    except LockError as e:
        assert str(e).startswith("fuzz.lock")
        return
    for model in parsed.models:
        for f in model.files:
            assert ".." not in f.path.split("/") and not f.path.startswith("/") and f.size >= 0


@pytest.mark.parametrize("text", ["", "{", "[]", '{"version": 1, "models": [{"name": "x"}]}', "\xff"])
def test_corrupt_lock_file_exits_2(text, hub, tmp_path):
    (tmp_path / "models.toml").write_text('[[models]]\nname = "m"\nrepo = "org/m"\n')
    (tmp_path / "models.lock").write_text(text, errors="surrogateescape")
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 2 and "models.lock" in run.err


class _Hostile(BaseHTTPRequestHandler):
    """A 'hub' whose file list and answers are hostile."""

    tree: list = []
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, payload, status=200):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if "/revision/" in self.path:
            self._json({"id": "org/evil", "sha": COMMIT, "siblings": []})
        elif "/tree/" in self.path:
            self._json(self.tree)
        elif self.path.startswith("/loop"):
            n = int(self.path.rsplit("/", 1)[-1] or 0)
            self.send_response(302)
            self.send_header("Location", f"/loop/{n + 1}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/downgrade"):
            self.send_response(302)  # to a host that is not local: plain http there is refused, not fetched
            self.send_header("Location", "http://models.example.invalid/x")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/ftp"):
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/x")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._json({"error": "nope"}, 404)

    do_HEAD = do_GET


@pytest.fixture
def hostile():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _entry(path, size=10, lfs=True):
    e = {"type": "file", "path": path, "size": size, "oid": "b" * 40}
    if lfs:
        e["lfs"] = {"oid": "a" * 64, "size": size, "pointerSize": 134}
    return e


@pytest.mark.parametrize("tree, needle", [
    ([_entry("../../etc/passwd")], "unsafe file path"),
    ([_entry("/abs/path")], "unsafe file path"),
    ([_entry("a\\..\\b")], "unsafe file path"),
    ([_entry("nul\x00byte")], "unsafe file path"),
    ([_entry(".seeder/state.json")], "unsafe file path"),
    ([_entry("neg.bin", size=-1)], "impossible size"),
    ([_entry("huge.bin", size=2**62)], "impossible size"),
    ([_entry("small.txt", size=-3, lfs=False)], "impossible size"),
])
def test_unsafe_paths_and_sizes_from_the_hub_are_refused(tree, needle, hostile, tmp_path):
    _Hostile.tree = tree
    (tmp_path / "models.toml").write_text('[[models]]\nname = "m"\nrepo = "org/evil"\n')
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), HF_ENDPOINT=hostile,
                     env=None, hub=None)
    assert run.code == 3 and needle in run.err, run
    assert not (tmp_path / "t").exists() and not Path("/etc/passwd.part").exists()


def test_redirect_loops_are_bounded(hostile, tmp_path):
    (tmp_path / "models.toml").write_text(
        f'[[models]]\nname = "m"\nurl = "{hostile}/loop/0"\nsha256 = "{"0" * 64}"\nsize = 10\nfilename = "x"\n')
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"))
    assert run.code == 3 and "too many redirects" in run.err


@pytest.mark.parametrize("proxied", [False, True], ids=["http.client", "requests"])
@pytest.mark.parametrize("route, message", [
    ("/downgrade", "refusing plain http:// for models.example.invalid"),
    ("/ftp", "not an http(s) URL: ftp://127.0.0.1/x"),
], ids=["plain-http", "ftp"])
def test_a_redirect_off_https_is_refused(route, message, proxied, hostile, tmp_path):
    (tmp_path / "models.toml").write_text(
        f'[[models]]\nname = "m"\nurl = "{hostile}{route}"\nsha256 = "{"0" * 64}"\nsize = 10\nfilename = "x"\n')
    # NO_PROXY keeps requests from actually using the (absent) proxy; its presence is what selects requests.
    extra = {"HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "*"} if proxied else {}
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), **extra)
    assert run.code == 3, run
    assert message in run.err and "redirected" in run.err


def test_missing_hub_headers_on_a_hub_url_without_sha256_exits_2(hub, tmp_path):
    data = blob(20_000, seed=1)
    commit = hub.add_repo("org/g", {"w.gguf": data})
    hub.add_fault("w.gguf", "missing_headers", times=10, methods=["HEAD", "GET"])
    (tmp_path / "models.toml").write_text(
        f'[[models]]\nname = "m"\nurl = "https://huggingface.co/org/g/resolve/{commit}/w.gguf"\n')
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 2 and "field 'sha256'" in run.err


@pytest.mark.parametrize("planted", [".seeder", ".seeder/tmp", ".seeder/versions", ".seeder/versions/m"])
def test_a_planted_symlink_never_sends_writes_outside(planted, hub, tmp_path):
    hub.add_repo("org/m", {"w.safetensors": blob(50_000, seed=2), "config.json": b"{}"})
    (tmp_path / "models.toml").write_text('[[models]]\nname = "m"\nrepo = "org/m"\n')
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "t"
    link = target / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(target), hub=hub)
    assert run.code == 4 and "symlink" in run.err, run
    assert list(outside.iterdir()) == []


def test_a_planted_model_link_is_replaced_not_written_through(hub, tmp_path):
    data = blob(50_000, seed=2)
    hub.add_repo("org/m", {"w.safetensors": data})
    (tmp_path / "models.toml").write_text('[[models]]\nname = "m"\nrepo = "org/m"\n')
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "t"
    target.mkdir()
    (target / "m").symlink_to(outside)
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(target), hub=hub)
    assert run.code == 0, run
    assert list(outside.iterdir()) == []
    assert (target / "m" / "w.safetensors").read_bytes() == data
    assert os.path.realpath(target / "m").startswith(str(target.resolve()))
    # what the target records is the file it really holds, under the digest the lock pinned
    [locked] = [f for f in json.loads((tmp_path / "models.lock").read_text())["models"][0]["files"]
                if f["path"] == "w.safetensors"]
    recorded = json.loads((target / ".seeder" / "state.json").read_text())["models"]["m"]["files"]["w.safetensors"]
    assert locked["sha256"] == recorded["sha256"] == file_sha256(target / "m" / "w.safetensors") == sha256(data)


def test_a_planted_partial_file_symlink_is_not_written_through(tmp_path, hub):
    data = blob(50_000, seed=3)
    url = hub.add_file("a.bin", data)
    (tmp_path / "models.toml").write_text(f'[[models]]\nname = "a"\nurl = "{url}"\nsha256 = "{sha256(data)}"\n')
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    part = tmp_path / "t" / ".seeder" / "tmp" / f"sha256-{sha256(data)}.part"
    part.parent.mkdir(parents=True)
    part.symlink_to(outside)
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 0, run
    assert outside.read_bytes() == b"precious"
    installed = tmp_path / "t" / "a" / "a.bin"
    assert installed.read_bytes() == data and not Path(os.path.realpath(installed)).is_symlink()
    assert os.path.realpath(installed).startswith(str((tmp_path / "t").resolve()))


@pytest.mark.parametrize("tamper", ["escape", "missing stamp", "garbage"])
def test_a_tampered_state_file_is_ignored_not_obeyed(tamper, hub, tmp_path):
    hub.add_repo("org/m", {"w.safetensors": blob(20_000, seed=4)})
    m = tmp_path / "models.toml"
    m.write_text('[[models]]\nname = "m"\nrepo = "org/m"\n')
    target = tmp_path / "t"
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("mine")
    state_file = target / ".seeder" / "state.json"
    state = json.loads(state_file.read_text())
    if tamper == "escape":
        state["models"]["../../victim"] = state["models"]["m"]
    elif tamper == "missing stamp":
        for rec in state["models"]["m"]["files"].values():
            del rec["stamp"]
    else:
        state["models"]["m"] = {"version": 7, "files": "x"}
    state_file.write_text(json.dumps(state))
    for args in ([], ["refresh"], ["status"], ["--verify"]):
        run = run_seeder(*args, "-m", str(m), "-t", str(target), hub=hub)
        assert run.code in (0, 1), (args, run)
    assert (victim / "keep").read_text() == "mine"
    assert run_seeder("--verify", "-m", str(m), "-t", str(target), hub=hub).code == 0
