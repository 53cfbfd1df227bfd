"""Day 2: refresh with an atomic switch, status, export/import bundles, cache housekeeping."""

from __future__ import annotations

import hashlib
import json
import re
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import blob, run_seeder, seeder_env, sha256, url_entry, write_manifest
from tests.fakehub import DEFAULT_GITATTRIBUTES

V1 = {
    ".gitattributes": DEFAULT_GITATTRIBUTES,       # the hub's, in every repo
    "config.json": b'{"v": 1}',
    "model.safetensors": blob(600_000, seed=11),
    "tokenizer.json": blob(300_000, seed=12),
    "old.txt": b"dropped in v2",
}
V2 = {
    ".gitattributes": DEFAULT_GITATTRIBUTES,
    "config.json": b'{"v": 1}',                    # unchanged
    "model.safetensors": blob(600_000, seed=21),   # changed
    "tokenizer.json": blob(300_000, seed=12),      # unchanged (large)
    "new.bin": blob(200_000, seed=22),             # added
}


def _setup(hub, tmp_path: Path, extra: str = "") -> tuple[Path, Path]:
    hub.add_repo("org/m", V1)
    m = tmp_path / "models.toml"
    m.write_text('[[models]]\nname = "m"\nrepo = "org/m"\n' + extra)
    target = tmp_path / "t"
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    return m, target


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_refresh_fetches_only_new_and_changed_files(hub, tmp_path):
    m, target = _setup(hub, tmp_path)
    new_commit = hub.add_repo("org/m", V2)

    hub.clear_log()
    before = _tree(target / "m")
    dry = run_seeder("refresh", "--dry-run", "-m", str(m), "-t", str(target), hub=hub)
    assert dry.code == 0, dry
    plan = [e for e in dry.events if e["event"] == "would change"][0]
    assert plan["added"] == ["new.bin"] and plan["updated"] == ["model.safetensors"] and plan["removed"] == ["old.txt"]
    assert plan["bytes_added"] == len(V2["new.bin"]) and plan["bytes_updated"] == len(V2["model.safetensors"])
    assert _tree(target / "m") == before and hub.body_bytes() == 0
    assert json.loads((tmp_path / "models.lock").read_text())["models"][0]["commit"] != new_commit
    # the plan, for people on stdout (one line per model) and for scripts as JSON and an exit code
    assert re.match(r"update +m +2 files, .* [0-9a-f]{12} -> [0-9a-f]{12}$", dry.out.strip()), dry.out
    quiet = run_seeder("refresh", "--dry-run", "-q", "--json", "--exit-code", "-m", str(m), "-t", str(target), hub=hub)
    plan = json.loads(quiet.out)
    assert quiet.code == 10 and plan == [{"model": "m", "action": "update", "files": 2,
                                          "bytes": len(V2["new.bin"]) + len(V2["model.safetensors"]),
                                          "from": plan[0]["from"], "to": new_commit}], quiet

    run = run_seeder("refresh", "--grace", "0", "-m", str(m), "-t", str(target), hub=hub)
    assert run.code == 0, run
    assert _tree(target / "m") == V2
    fetched = {r.path.rsplit("/", 1)[-1]: r.bytes_sent for r in hub.requests if r.method == "GET" and r.kind != "api"}
    assert fetched == {"model.safetensors": len(V2["model.safetensors"]), "new.bin": len(V2["new.bin"])}
    assert json.loads((tmp_path / "models.lock").read_text())["models"][0]["commit"] == new_commit
    change = [e for e in run.events if e["event"] == "change"][0]
    assert change["removed"] == ["old.txt"]
    assert run_seeder("--verify", "-m", str(m), "-t", str(target), hub=hub).code == 0
    again = run_seeder("refresh", "--dry-run", "--exit-code", "-m", str(m), "-t", str(target), hub=hub)
    assert again.code == 0 and again.out.startswith("unchanged m"), again
    # only the new version is left on disk
    assert len(list((target / ".seeder" / "versions" / "m").iterdir())) == 1


def test_refresh_removes_models_the_manifest_dropped_unless_kept(hub, tmp_path):
    data = blob(1000, seed=5)
    url = hub.add_file("x.bin", data)
    m, target = _setup(hub, tmp_path, f'[[models]]\nname = "x"\nurl = "{url}"\nsha256 = "{sha256(data)}"\n')
    m.write_text('[[models]]\nname = "m"\nrepo = "org/m"\n')
    assert run_seeder("refresh", "--keep-removed", "-m", str(m), "-t", str(target), hub=hub).code == 0
    assert (target / "x" / "x.bin").exists()
    run = run_seeder("refresh", "-m", str(m), "-t", str(target), hub=hub)
    assert run.code == 0, run
    assert not (target / "x").exists() and not (target / ".seeder" / "versions" / "x").exists()
    assert [e["model"] for e in run.events if e["event"] == "removed"] == ["x"]


def _digest_set(target: Path, name: str) -> dict[str, str] | None:
    """What a well-behaved reader sees: resolve the model's link once, then read beneath it."""
    root = Path(os.path.realpath(target / name))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_readers_see_one_complete_version_during_refreshes(hub, tmp_path):
    m, target = _setup(hub, tmp_path)
    c1 = hub.add_repo("org/m", V1, branch="v1")
    c2 = hub.add_repo("org/m", V2, branch="v2")
    versions = [{k: sha256(v) for k, v in V1.items()}, {k: sha256(v) for k, v in V2.items()}]
    seen, errors, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                got = _digest_set(target, "m")
            except OSError as e:  # a missing file or link is exactly what must never happen
                errors.append(repr(e))
                continue
            seen.append(versions.index(got) if got in versions else got)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(4):
            rev, commit = ("v2", c2) if i % 2 == 0 else ("v1", c1)
            m.write_text(f'[[models]]\nname = "m"\nrepo = "org/m"\nrevision = "{rev}"\n')
            # The grace outlasts a reader that resolved the old link and then waited for the GIL behind the hub.
            run = run_seeder("refresh", "--grace", "2", "-m", str(m), "-t", str(target), hub=hub)
            assert run.code == 0, run
            assert json.loads((tmp_path / "models.lock").read_text())["models"][0]["commit"] == commit
            [row] = json.loads(run_seeder("status", "--json", "-m", str(m), "-t", str(target)).out)
            assert (row["state"], row["commit"]) == ("complete", commit), row
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert set(seen) == {0, 1}, [s for s in seen if s not in (0, 1)][:1]


def test_sigkill_during_refresh_leaves_one_complete_version(hub, tmp_path):
    m, target = _setup(hub, tmp_path)
    hub.add_repo("org/m", V2)
    hub.throttle_bps = 2_000_000  # so kills land mid-download as well as around the switch
    versions = [{k: sha256(v) for k, v in V1.items()}, {k: sha256(v) for k, v in V2.items()}]
    env = seeder_env(hub.url)
    for delay in (0.3, 0.5, 0.7, 0.9, 1.1):
        proc = subprocess.Popen([sys.executable, "-m", "seeder", "refresh", "--grace", "0", "-m", str(m),
                                 "-t", str(target), "--log-format", "json"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _digest_set(target, "m") in versions
    hub.throttle_bps = None
    run = run_seeder("refresh", "-m", str(m), "-t", str(target), hub=hub)
    assert run.code == 0, run
    assert _tree(target / "m") == V2
    assert run_seeder("--verify", "-m", str(m), "-t", str(target), hub=hub).code == 0


def test_status_reports_each_state(hub, tmp_path):
    data = blob(5000, seed=3)
    url = hub.add_file("u.bin", data)
    m, target = _setup(hub, tmp_path, f'[[models]]\nname = "u"\nurl = "{url}"\nsha256 = "{sha256(data)}"\n')
    rows = {r["name"]: r for r in json.loads(run_seeder("status", "--json", "-m", str(m), "-t", str(target)).out)}
    assert rows["m"]["state"] == "complete" and rows["m"]["files"] == len(V1)
    assert rows["m"]["bytes"] == sum(len(v) for v in V1.values()) and rows["m"]["commit"]
    assert rows["u"]["state"] == "complete" and rows["u"]["installed_at"]

    path = target / "u" / "u.bin"
    path.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    rows = {r["name"]: r for r in json.loads(run_seeder("status", "--json", "-m", str(m), "-t", str(target)).out)}
    assert rows["u"]["state"] == "complete"  # same size: only hashing tells
    deep = run_seeder("status", "--json", "--verify", "-m", str(m), "-t", str(target))
    assert {r["name"]: r["state"] for r in json.loads(deep.out)}["u"] == "modified"
    (target / "m" / "config.json").unlink()
    m.write_text(m.read_text().replace('name = "u"', 'name = "w"'))
    table = run_seeder("status", "-m", str(m), "-t", str(target))
    states = {"complete", "partial", "missing", "stale", "modified", "extra"}
    lines = {c[0]: c[1] for c in map(str.split, table.out.splitlines()[1:]) if len(c) > 1 and c[1] in states}
    assert lines == {"m": "modified", "w": "missing", "u": "extra"}


def test_status_calls_a_damaged_model_modified_and_exits_1_as_verify_does(hub, tmp_path):
    data = blob(5000, seed=5)
    m = write_manifest(tmp_path / "models.toml", url_entry("d", hub.add_file("d.bin", data), data))
    target = tmp_path / "t"
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    args = ("-m", str(m), "-t", str(target))
    path = target / "d" / "d.bin"
    # One byte more, one less, one other (the same size: only hashing tells), the file gone.
    for damage, fast_sees_it in ((data + b"\0", True), (data[:-1], True), (bytes([data[0] ^ 1]) + data[1:], False),
                                 (None, True)):
        path.unlink() if damage is None else path.write_bytes(damage)
        assert run_seeder("verify", *args).code == 1
        for deep in (True, False):
            run = run_seeder("status", "--json", *(["--verify"] if deep else []), *args)
            row = json.loads(run.out)[0]
            if not deep and not fast_sees_it:
                assert (run.code, row["state"]) == (0, "complete"), run
                continue
            assert (run.code, row["state"]) == (1, "modified"), (damage is None, deep, row, run)
            last = run.events[-1]
            assert (last["level"], last["exit_code"]) == ("error", 1) and "modified since install: d" in last["event"]
        table = run_seeder("status", "--verify", *args)
        assert table.code == 1 and table.out.splitlines()[1].split()[:2] == ["d", "modified"], table
    assert run_seeder(*args, hub=hub).code == 0  # seeder repairs it
    run = run_seeder("status", "--json", "--verify", *args)
    assert (run.code, json.loads(run.out)[0]["state"]) == (0, "complete"), run


def test_export_import_round_trip_and_bad_bundles(hub, tmp_path):
    data = b"GGUF" + blob(300_000, seed=4)
    url = hub.add_file("llm.gguf", data)
    m, target = _setup(hub, tmp_path, f'[[models]]\nname = "llm"\nurl = "{url}"\nsha256 = "{sha256(data)}"\n')
    bundle = tmp_path / "models.tar.zst"
    run = run_seeder("export", "--output", str(bundle), "-m", str(m), "-t", str(target))
    assert run.code == 0, run
    import tarfile

    import zstandard

    assert bundle.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # really zstd, not a tar named .zst
    with zstandard.ZstdDecompressor().stream_reader(open(bundle, "rb")) as zst, tarfile.open(fileobj=zst, mode="r|") as tar:
        assert tar.next().name == "models.lock"

    fresh = tmp_path / "fresh"
    run = run_seeder("import", str(bundle), "-t", str(fresh))
    assert run.code == 0, run
    assert _tree(fresh / "m") == _tree(target / "m") and _tree(fresh / "llm") == _tree(target / "llm")
    assert run_seeder("--verify", "-m", str(tmp_path / "none.toml"), "-t", str(fresh)).code == 0

    raw = tmp_path / "models.tar"
    assert run_seeder("export", "-o", str(raw), "-m", str(m), "-t", str(target)).code == 0
    payload = raw.read_bytes()
    where = payload.index(V1["model.safetensors"][:64]) + 1000
    flipped = tmp_path / "flipped.tar"
    flipped.write_bytes(payload[:where] + bytes([payload[where] ^ 0xFF]) + payload[where + 1:])
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    for bad in (flipped, cut):
        other = tmp_path / f"into-{bad.stem}"
        assert run_seeder("import", str(bundle), "-t", str(other)).code == 0
        before = _tree(other)
        run = run_seeder("import", str(bad), "-t", str(other))
        assert run.code == 1, run
        assert _tree(other) == before  # nothing changed, staging cleaned up
        empty = tmp_path / f"empty-{bad.stem}"
        assert run_seeder("import", str(bad), "-t", str(empty)).code == 1
        assert not (empty / "m").exists() and not (empty / "llm").exists()


def test_cache_du_and_prune_keep_what_the_manifest_needs(hub, tmp_path):
    hub.add_repo("org/m", V1)
    m = tmp_path / "models.toml"
    m.write_text('[[models]]\nname = "m"\nrepo = "org/m"\n')
    cache = tmp_path / "cache"
    assert run_seeder("-m", str(m), "-t", str(tmp_path / "t1"), "--cache", str(cache), hub=hub).code == 0
    hub.add_repo("org/m", V2)
    assert run_seeder("refresh", "-m", str(m), "-t", str(tmp_path / "t1"), "--cache", str(cache), hub=hub).code == 0
    du = run_seeder("cache", "du", "--cache", str(cache))
    blobs = len(V1) + 2  # v1's files, then v2's changed and added ones
    assert du.code == 0 and du.out.startswith(f"{blobs} files"), du
    run = run_seeder("cache", "prune", "--keep-days", "1", "-m", str(m), "--cache", str(cache))
    assert run.code == 0 and len(list((cache / "blobs").iterdir())) == blobs  # all younger than a day
    run = run_seeder("cache", "prune", "-m", str(m), "--cache", str(cache))
    assert run.code == 0, run
    lock = json.loads((tmp_path / "models.lock").read_text())
    needed = {("sha256-" + f["sha256"]) if "sha256" in f else "gitsha1-" + f["git_oid"] for f in lock["models"][0]["files"]}
    assert {p.name for p in (cache / "blobs").iterdir()} == needed
    hub.clear_log()
    assert run_seeder("-m", str(m), "-t", str(tmp_path / "t2"), "--cache", str(cache), hub=hub).code == 0
    assert hub.body_bytes() == 0


def test_status_reports_stale_and_the_revision(hub, tmp_path):
    m, target = _setup(hub, tmp_path)
    rows = {r["name"]: r for r in json.loads(run_seeder("status", "--json", "-m", str(m), "-t", str(target)).out)}
    assert rows["m"]["state"] == "complete" and rows["m"]["revision"] == "main"
    m.write_text(m.read_text() + 'include = ["*.json"]\n')  # the manifest changed since install
    rows = {r["name"]: r for r in json.loads(run_seeder("status", "--json", "-m", str(m), "-t", str(target)).out)}
    assert rows["m"]["state"] == "stale" and "manifest changed" in rows["m"]["detail"]


def test_a_reader_holding_an_old_file_open_keeps_reading_it_after_a_refresh(hub, tmp_path):
    m, target = _setup(hub, tmp_path)
    with open(target / "m" / "model.safetensors", "rb") as old:
        head = old.read(1000)
        hub.add_repo("org/m", V2)
        run = run_seeder("refresh", "-m", str(m), "-t", str(target), hub=hub)  # grace 0: the old version goes
        assert run.code == 0, run
        assert not any(p.name == "old.txt" for p in (target / ".seeder" / "versions").rglob("*"))
        assert head + old.read() == V1["model.safetensors"]
    assert (target / "m" / "model.safetensors").read_bytes() == V2["model.safetensors"]


def test_a_file_already_anywhere_in_the_target_is_reused_not_fetched(hub, tmp_path):
    m, target = _setup(hub, tmp_path)
    same = V1["model.safetensors"]
    url = hub.add_file("copy/weights.bin", same)
    m.write_text(m.read_text() + "\n" + url_entry("copy", url, same))
    hub.clear_log()
    run = run_seeder("-m", str(m), "-t", str(target), hub=hub)
    assert run.code == 0, run
    assert (target / "copy" / "weights.bin").read_bytes() == same
    assert hub.body_bytes("copy/weights.bin") == 0


def test_an_export_carries_the_lock_and_a_checksum_list(hub, tmp_path):
    import tarfile

    from seeder.commands.bundle import LOCK_NAME, PREFIX, SUMS_NAME

    m, target = _setup(hub, tmp_path)
    bundle = tmp_path / "models.tar"
    assert run_seeder("export", "-o", str(bundle), "-m", str(m), "-t", str(target)).code == 0
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        sums = dict(line.split("  ")[::-1] for line in tar.extractfile(SUMS_NAME).read().decode().splitlines())
    assert names[:2] == [LOCK_NAME, SUMS_NAME]
    assert sums == {f"{PREFIX}m/{path}": sha256(data) for path, data in V1.items()}


def test_an_export_holds_what_the_lock_lists_not_a_model_the_manifest_dropped(hub, tmp_path):
    import tarfile

    keep, gone = blob(2_000, seed=35), blob(3_000, seed=36)
    m = write_manifest(tmp_path / "models.toml", url_entry("keep", hub.add_file("k/keep.bin", keep), keep) + "\n"
                       + url_entry("gone", hub.add_file("g/gone.bin", gone), gone))
    target = tmp_path / "t"
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    assert run_seeder("remove", "gone", "-m", str(m)).code == 0
    rows = json.loads(run_seeder("status", "--json", "-m", str(m), "-t", str(target)).out)
    assert {r["name"]: r["state"] for r in rows} == {"keep": "complete", "gone": "extra"}

    bundle = tmp_path / "b.tar"
    run = run_seeder("export", "-o", str(bundle), "-m", str(m), "-t", str(target))
    assert run.code == 0, run
    with tarfile.open(bundle) as tar:
        assert tar.getnames() == ["models.lock", "SHA256SUMS", "models/keep/keep.bin"]
        assert [e["name"] for e in json.loads(tar.extractfile("models.lock").read())["models"]] == ["keep"]
    assert [e["models"] for e in run.events if e["event"].startswith("left out of the bundle")] == [["gone"]], run
    fresh = tmp_path / "fresh"
    assert run_seeder("import", str(bundle), "-t", str(fresh)).code == 0
    rows = json.loads(run_seeder("status", "--json", "-m", str(tmp_path / "none.toml"), "-t", str(fresh)).out)
    assert [(r["name"], r["state"]) for r in rows] == [("keep", "complete")] and not (fresh / "gone").exists()

    # With no manifest to ask, the bundle carries every model the target records, and names them.
    run = run_seeder("export", "-o", str(tmp_path / "all.tar"), "-m", str(tmp_path / "none.toml"), "-t", str(target))
    assert run.code == 0 and sorted(run.events[-1]["models"]) == ["gone", "keep"], run
    with tarfile.open(tmp_path / "all.tar") as tar:
        assert {"models/keep/keep.bin", "models/gone/gone.bin"} <= set(tar.getnames())


def test_refresh_dry_run_plans_adds_and_removals_per_model(hub, tmp_path):
    a, b = blob(2_000, seed=31), blob(3_000, seed=32)
    ua, ub = hub.add_file("a/a.bin", a), hub.add_file("b/b.bin", b)
    m = write_manifest(tmp_path / "models.toml", url_entry("a", ua, a))
    target = tmp_path / "t"
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    m.write_text(url_entry("b", ub, b))  # a goes, b comes
    dry = run_seeder("refresh", "--dry-run", "--json", "-m", str(m), "-t", str(target), hub=hub)
    plan = {p["model"]: p for p in json.loads(dry.out)}
    assert plan["b"]["action"] == "add" and plan["b"]["bytes"] == len(b) and plan["b"]["from"] is None
    assert plan["a"]["action"] == "remove" and plan["a"]["files"] == 1 and plan["a"]["to"] is None
    keep = run_seeder("refresh", "--dry-run", "--keep-removed", "-m", str(m), "-t", str(target), hub=hub)
    assert [line.split()[:2] for line in keep.out.splitlines()] == [["add", "b"]]
    assert "1 file, 2.9 KiB" in keep.out, keep.out


def test_verify_reports_stray_files_and_import_says_what_it_replaces(hub, tmp_path):
    a1, a2 = blob(2_000, seed=33), blob(2_000, seed=34)
    u1 = hub.add_file("v1/a.bin", a1)
    m = write_manifest(tmp_path / "models.toml", url_entry("a", u1, a1) + 'filename = "a.bin"\n')
    target = tmp_path / "t"
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    bundle = tmp_path / "old.tar"
    assert run_seeder("export", "-o", str(bundle), "-m", str(m), "-t", str(target)).code == 0
    (target / "a" / "notes.txt").write_text("put here by hand")
    run = run_seeder("verify", "-m", str(m), "-t", str(target))
    assert run.code == 1 and any(e.get("file") == "notes.txt" and e.get("problem") == "stray" for e in run.events)
    (target / "a" / "notes.txt").unlink()
    u2 = hub.add_file("v2/a.bin", a2)
    m.write_text(url_entry("a", u2, a2) + 'filename = "a.bin"\n')
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    run = run_seeder("import", str(bundle), "-t", str(target))  # the older bundle
    assert run.code == 0 and any(e["event"] == "the bundle replaces an installed model" for e in run.events), run
    assert (target / "a" / "a.bin").read_bytes() == a1


def test_cache_prune_names_a_missing_keep_manifest(tmp_path):
    write_manifest(tmp_path / "models.toml", "")
    (tmp_path / "models.lock").write_text('{"version": 1, "models": []}')  # -m itself is fine
    run = run_seeder("cache", "prune", "--cache", str(tmp_path / "c"), "-m", str(tmp_path / "models.toml"),
                     "--keep", str(tmp_path / "missing.toml"))
    assert run.code == 2 and "missing.toml: no such manifest" in run.err, run


_READ_COUNTING = """
import sys
from seeder.cli import main
code = main(sys.argv[1:])
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
print(io["rchar"])  # bytes this process read through read() and its kin, from files and pipes alike
sys.exit(code)
"""


def _import_reading(bundle: Path, target: Path) -> int:
    """``seeder import``, run for real; returns how many bytes the process read."""
    proc = subprocess.run([sys.executable, "-c", _READ_COUNTING, "import", str(bundle), "-t", str(target),
                           "--log-format", "json"], env=seeder_env(None), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


def test_import_hashes_each_blob_once(hub, tmp_path):
    big = {"config.json": b'{"v": 1}', "model.safetensors": blob(24 << 20, seed=31)}  # small: git blob id only
    hub.add_repo("org/big", {".gitattributes": DEFAULT_GITATTRIBUTES, **big})
    hub.add_repo("org/small", {".gitattributes": DEFAULT_GITATTRIBUTES, "config.json": b'{"v": 2}'})
    bundles = {}
    for name in ("small", "big"):
        m = write_manifest(tmp_path / f"{name}.toml", f'[[models]]\nname = "{name}"\nrepo = "org/{name}"\n'
                                                            'include = ["*.json", "*.safetensors"]\n')
        assert run_seeder("-m", str(m), "-t", str(tmp_path / name), hub=hub).code == 0
        bundles[name] = tmp_path / f"{name}.tar"  # uncompressed: the bundle's bytes are the bytes read
        assert run_seeder("export", "-o", str(bundles[name]), "-m", str(m), "-t", str(tmp_path / name)).code == 0
    # What the interpreter and seeder read to start and to import a bundle of next to nothing ...
    baseline = _import_reading(bundles["small"], tmp_path / "into-small")
    # ... and what importing the big one reads on top: the bundle once, and no blob a second time.
    extra = _import_reading(bundles["big"], tmp_path / "into-big") - baseline
    payload = sum(len(v) for v in big.values())
    assert 0.99 * payload < extra < 1.05 * payload, extra / payload  # hashed twice, it was 2.0
    assert _tree(tmp_path / "into-big" / "big") == big
    assert run_seeder("verify", "-m", str(tmp_path / "none.toml"), "-t", str(tmp_path / "into-big")).code == 0
    # The sha256 of a file the lock pins by git blob id only still reaches the state: staging computed it.
    files = json.loads((tmp_path / "into-big" / ".seeder" / "state.json").read_text())["models"]["big"]["files"]
    assert {p: f["sha256"] for p, f in files.items()} == {p: sha256(v) for p, v in big.items()}
