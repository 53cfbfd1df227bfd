"""``seeder verify``, ``seeder.check(lock=)`` and the app over a directory seeder did not write: what an image
volume of a pushed model holds (docs/kubernetes.md, "Models as image volumes"): each model's files at
``<target>/<name>/<path>``, no ``.seeder/``, read-only. Held to the manifest's lock, every problem exits 1
naming the file, and nothing is written into the directory.

The directory is made read-only with chmod. Root passes permission bits through CAP_DAC_OVERRIDE and
CAP_FOWNER, so as root the commands run without both (util-linux's setpriv), and the bits bind them too.
tests/test_kubernetes.py runs the same check in the seeder image over a read-only bind mount of files
pulled from a registry.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from seeder.spec.lock import Lock
from seeder.store.verify import check
from tests.conftest import ROOT, Run, seeder_env, url_entry
from tests.docker import data as d

@pytest.fixture
def world(tmp_path):
    """A manifest, its lock and the models' files as an image volume holds them, all read-only."""
    from tests.fakehub import FakeHub

    root = tmp_path / "world"
    root.mkdir()
    try:
        src = root / "src"
        files = {"emb": {"config.json": b'{"hidden_size": 64}',
                         "model.safetensors": d.make_safetensors(src / "model.safetensors", seed=7).read_bytes(),
                         "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}'},
                 "llm": {"tiny.gguf": d.make_gguf(src / "tiny.gguf", seed=8, tensor_bytes=8192).read_bytes()}}
        with FakeHub() as hub:
            hub.add_repo("org/emb", files["emb"])
            manifest = root / "etc" / "models.toml"
            manifest.parent.mkdir()
            manifest.write_text('[[models]]\nname = "emb"\nrepo = "org/emb"\n'
                                'include = ["*.json", "*.safetensors", "1_Pooling/*"]\n\n'
                                + url_entry("llm", hub.add_file("tiny.gguf", files["llm"]["tiny.gguf"]),
                                            files["llm"]["tiny.gguf"]))
            locked = run(["lock", "-m", str(manifest)], hub_url=hub.url)
            assert locked.code == 0, locked
        models = root / "models"
        for name, tree in files.items():
            for path, data in tree.items():
                (models / name / path).parent.mkdir(parents=True, exist_ok=True)
                (models / name / path).write_bytes(data)
        read_only(root)
        yield {"manifest": manifest, "lock": manifest.with_suffix(".lock"), "models": models, "files": files}
    finally:
        writable(root)  # for pytest's clean-up


def read_only(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)


def writable(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def unprivileged() -> list[str]:
    """A command prefix under which root honours permission bits: none for other users."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "as root, this test needs util-linux's setpriv to drop CAP_DAC_OVERRIDE and CAP_FOWNER"
    caps = "-dac_override,-fowner"
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]


def run(args: list[str], hub_url: str | None = None) -> Run:
    proc = subprocess.run([*unprivileged(), sys.executable, "-m", "seeder", *args, "--log-format", "json"],
                          env=seeder_env(hub_url), capture_output=True, text=True, timeout=120)
    result = Run(proc)
    assert "Traceback" not in result.err, result.err
    return result


def verify(w: dict, *args: str) -> Run:
    return run(["verify", "-m", str(w["manifest"]), "-t", str(w["models"]), *args])


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` with what a write would change."""
    out = {}
    for p in [root, *root.rglob("*")]:
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino,
                                         p.read_bytes() if p.is_file() else None)
    return out


def problems(result: Run) -> list[tuple[str, str | None, str]]:
    return [(e["model"], e.get("file"), e["problem"]) for e in result.events if e.get("event") == "verify failed"]


def damage(w: dict, change) -> None:
    """Apply ``change`` to the models' directory, then make it read-only again."""
    writable(w["models"])
    change(w["models"])
    read_only(w["models"])


def test_good_files_pass_and_nothing_is_written(world):
    before = snapshot(world["models"].parent)
    for args in ((), ("--fast",)):
        result = verify(world, *args)
        assert result.code == 0, result
        assert any(e["event"].startswith("no .seeder/ in the target") for e in result.events), result
        summary = result.events[-1]
        assert (summary["event"], summary["models"], summary["files"], summary["problems"]) == ("verify", 2, 4, 0)
    assert snapshot(world["models"].parent) == before
    assert not (world["models"] / ".seeder").exists()


def flip_last_byte(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))


@pytest.mark.parametrize("change, expected, fast_sees_it", [
    (lambda m: flip_last_byte(m / "emb/model.safetensors"), ("emb", "model.safetensors", "checksum"), False),
    (lambda m: (m / "emb/1_Pooling/config.json").write_bytes(b'{"pooling_mode_mean_tokens": false}'),
     ("emb", "1_Pooling/config.json", "size"), True),
    (lambda m: (m / "emb/1_Pooling/config.json").unlink(), ("emb", "1_Pooling/config.json", "missing"), True),
    (lambda m: (m / "llm/notes.txt").write_text("not pushed"), ("llm", "notes.txt", "stray"), True),
    (lambda m: shutil.rmtree(m / "llm"), ("llm", None, "not-installed"), True),
], ids=["a-changed-byte", "another-size", "a-missing-file", "a-stray-file", "a-missing-model"])
def test_each_problem_exits_1_naming_the_file(world, change, expected, fast_sees_it):
    damage(world, change)
    before = snapshot(world["models"].parent)
    result = verify(world)
    assert result.code == 1, result
    assert problems(result) == [expected], result
    last = result.events[-1]
    assert last["level"] == "error" and last["event"].startswith("verify (sha256): 1 problem; 2 models"), last
    if expected[2] == "not-installed":
        assert str(world["models"] / "llm") in result.err
    assert verify(world, "--fast").code == (1 if fast_sees_it else 0)
    assert snapshot(world["models"].parent) == before


def test_a_target_seeder_wrote_is_still_held_to_its_state(world):
    """An empty .seeder/ is seeder's: with nothing recorded, every model is not installed, as before."""
    writable(world["models"])
    (world["models"] / ".seeder").mkdir()
    read_only(world["models"])
    result = verify(world)
    assert result.code == 1 and problems(result) == [("emb", None, "not-installed"), ("llm", None, "not-installed")]
    assert "not installed (run seeder)" in result.err


def test_without_a_manifest_there_is_nothing_to_hold_it_to(world):
    result = run(["verify", "-m", str(world["manifest"].with_name("none.toml")), "-t", str(world["models"])])
    assert result.code == 2 and "nothing installed in" in result.err, result


def test_the_apps_check_takes_the_lock(world):
    models, lock = world["models"], world["lock"]
    assert check(models, lock=lock) == [] and check(models, lock=lock, fast=False) == []
    assert [p.kind for p in check(models)] == ["not-installed"]  # no record: the lock is needed
    assert [(p.model, p.kind) for p in check(models, lock=lock.with_name("none.lock"))] == [("*", "lock")]
    damage(world, lambda m: (m / "llm/tiny.gguf").write_bytes(b"GGUF"))
    assert [(p.model, p.path, p.kind) for p in check(models, lock=lock)] == [("llm", "tiny.gguf", "size")]


def test_an_empty_lock_is_a_problem_for_the_app(tmp_path):
    (tmp_path / "models.lock").write_text(Lock(models=()).dumps())
    assert [(p.kind, p.detail) for p in check(tmp_path, lock=tmp_path / "models.lock")] == [
        ("lock", f"{tmp_path / 'models.lock'} lists no models")]


def test_the_app_serves_the_lock_s_models_from_files_seeder_did_not_write(world):
    env = {**os.environ, "MODELS_DIR": str(world["models"]), "MODELS_LOCK": str(world["lock"]), "PORT": "0",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "app"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "listening on :" in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{line.rsplit(':', 1)[1].strip()}/models", timeout=10) as r:
            listed = json.loads(r.read())
    finally:
        proc.terminate()
        proc.wait(10)
    by_name = {m["name"]: m for m in listed}
    assert sorted(by_name) == ["emb", "llm"] and by_name["llm"]["path"] == str(world["models"] / "llm")
    emb = {f["path"]: f for f in by_name["emb"]["files"]}
    assert emb["model.safetensors"]["header"]["tensors"] == 3
    assert by_name["llm"]["files"][0]["header"]["format"] == "gguf"

    damage(world, lambda m: (m / "emb/model.safetensors").unlink())
    proc = subprocess.run([sys.executable, "-m", "app"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "emb/model.safetensors: missing" in proc.stderr, proc.stderr
