"""``seeder.store.verify`` on real files: what ``seeder verify`` and an app's ``seeder.check()`` report for
each kind of damage, fast (sizes) and full (digests). test_seed.py and test_lifecycle.py cover it through
the CLI (written against the mutants tests/mutation found alive, issue #15)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from seeder.spec.lock import Lock, LockedFile, LockedModel
from seeder.store.state import ModelRecord
from seeder.store.target import Target
from seeder.store.verify import Problem, check, installed_lock, verify
from tests.conftest import sha256
from tests.test_publish_units import A, B, installed_target, locked_model


def _kinds(problems: list[Problem]) -> list[tuple[str, str | None, str]]:
    return [(p.model, p.path, p.kind) for p in problems]


def test_an_intact_target_has_no_problem_fast_or_full(tmp_path: Path):
    target, lock = installed_target(tmp_path / "t", locked_model())
    assert verify(target, lock) == []
    assert verify(target, lock, fast=True) == []
    assert verify(target, lock, jobs=1) == []
    assert check(target.root) == [] and check(target.root, fast=False) == []


def test_a_missing_file(tmp_path: Path):
    target, lock = installed_target(tmp_path / "t", locked_model())
    (target.root / "m" / "w.bin").unlink()
    assert _kinds(verify(target, lock)) == [("m", "w.bin", "missing")]
    assert _kinds(verify(target, lock, fast=True)) == [("m", "w.bin", "missing")]


def test_a_file_of_another_size(tmp_path: Path):
    target, lock = installed_target(tmp_path / "t", locked_model())
    (target.root / "m" / "w.bin").write_bytes(A + b"!")
    problems = verify(target, lock, fast=True)
    assert _kinds(problems) == [("m", "w.bin", "size")]
    assert problems[0].detail == f"size {len(A) + 1}, expected {len(A)}"


def test_same_size_wrong_bytes_only_a_full_check_sees(tmp_path: Path):
    target, lock = installed_target(tmp_path / "t", locked_model())
    (target.root / "m" / "w.bin").write_bytes(A.upper())
    assert verify(target, lock, fast=True) == []
    problems = verify(target, lock)
    assert _kinds(problems) == [("m", "w.bin", "checksum")]
    assert problems[0].detail == f"sha256 {sha256(A.upper())}, expected {sha256(A)}"
    assert check(target.root) == []  # the app's start-up check is fast unless asked
    assert _kinds(check(target.root, fast=False)) == [("m", "w.bin", "checksum")]


def test_an_unreadable_file_of_the_right_size(tmp_path: Path):
    target, _ = installed_target(tmp_path / "t", locked_model())
    directory = (target.root / "m" / "dir.bin")
    directory.mkdir()  # stat gives a size, open fails
    model = LockedModel(name="m", fingerprint="f", kind="repo", repo="org/m", revision="main", commit="c" * 40,
                        files=(LockedFile(path="dir.bin", size=directory.stat().st_size, sha256=sha256(b"")),))
    state = {"m": ModelRecord(model=model, installed_at="x", files={})}
    problems = [p for p in verify(target, Lock(models=(model,)), state=state) if p.kind != "stray"]
    assert _kinds(problems) == [("m", "dir.bin", "missing")]
    assert problems[0].detail.startswith("unreadable: ")
    assert [p for p in verify(target, Lock(models=(model,)), state=state, fast=True) if p.kind != "stray"] == []


def test_not_installed_and_stale(tmp_path: Path):
    model = locked_model()
    target, _ = installed_target(tmp_path / "t", model)
    other = locked_model("other")
    assert _kinds(verify(target, Lock(models=(other,)))) == [("other", None, "not-installed")]
    newer = locked_model(a=A.upper())
    problems = verify(target, Lock(models=(newer,)))
    # A stale version is said once, and its files are still checked against the newer lock.
    assert _kinds(problems) == [("m", None, "stale"), ("m", "w.bin", "checksum")]


def test_a_model_not_installed_does_not_hide_the_next_ones_problems(tmp_path: Path):
    model = locked_model()
    target, _ = installed_target(tmp_path / "t", model)
    (target.root / "m" / "w.bin").unlink()
    problems = verify(target, Lock(models=(locked_model("absent"), model)))
    assert _kinds(problems) == [("absent", None, "not-installed"), ("m", "w.bin", "missing")]


def test_the_apps_fast_check_starts_no_thread_pool(tmp_path: Path):
    # seeder.check() runs in an app's start-up: a stat per file, no pool, not even its import.
    target, _ = installed_target(tmp_path / "t", locked_model())
    code = ("import sys, seeder; assert seeder.check(sys.argv[1]) == []; "
            "print('concurrent.futures' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(target.root)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_recorded_model_whose_link_is_gone_is_not_installed(tmp_path: Path):
    target, lock = installed_target(tmp_path / "t", locked_model())
    (target.root / "m").unlink()
    assert _kinds(verify(target, lock)) == [("m", None, "not-installed")]


def test_stray_files_and_links_are_named_in_order(tmp_path: Path):
    target, lock = installed_target(tmp_path / "t", locked_model())
    root = (target.root / "m")
    (root / "zz.txt").write_text("mine")
    (root / "sub" / "aa.bin").write_text("mine")
    os.symlink("w.bin", root / "link")
    (root / "emptydir").mkdir()
    assert _kinds(verify(target, lock, fast=True)) == [("m", "link", "stray"), ("m", "sub/aa.bin", "stray"),
                                                       ("m", "zz.txt", "stray")]


def test_problems_of_files_come_largest_first(tmp_path: Path):
    # The lock lists w.bin first; sub/c.json is locked larger, so only sorting puts it first.
    target, lock = installed_target(tmp_path / "t", locked_model(b=B * 3))
    (target.root / "m" / "w.bin").unlink()
    (target.root / "m" / "sub/c.json").unlink()
    big, small = sorted(lock.models[0].files, key=lambda f: -f.size)
    assert [p.path for p in verify(target, lock)] == [big.path, small.path]
    assert [p.path for p in verify(target, lock, fast=True)] == [big.path, small.path]


def test_check_of_an_empty_directory_says_nothing_is_installed(tmp_path: Path):
    problems = check(tmp_path)
    assert _kinds(problems) == [("*", None, "not-installed")]
    assert str(tmp_path) in problems[0].detail


def test_the_installed_lock_is_what_the_state_records(tmp_path: Path):
    one, two = locked_model("one"), locked_model("two", b=B.upper())
    target, lock = installed_target(tmp_path / "t", one, two)
    assert installed_lock(target.read_state()) == lock
    (target.root / "two" / "sub/c.json").unlink()
    assert _kinds(check(target.root)) == [("two", "sub/c.json", "missing")]


# -- a directory seeder did not write (no .seeder/): an image volume of pushed models, held to a lock alone --


def foreign_tree(root: Path, *models: LockedModel) -> Lock:
    """Each model's files at ``root/<name>/<path>``, as an image volume holds them: no state, no links."""
    for model in models:
        for file in model.files:
            (root / model.name / file.path).parent.mkdir(parents=True, exist_ok=True)
            (root / model.name / file.path).write_bytes(A if file.path == "w.bin" else B)
    return Lock(models=models)


def test_files_seeder_did_not_write_are_checked_against_the_lock(tmp_path: Path):
    lock = foreign_tree(tmp_path / "t", locked_model(), locked_model("n", b=B))
    target = Target(tmp_path / "t")
    assert not target.managed()
    assert verify(target, lock) == [] and verify(target, lock, fast=True) == []
    assert _kinds(check(target.root)) == [("*", None, "not-installed")]  # no record: it needs the lock
    assert check(target.root, lock=write_lock(tmp_path, lock)) == []
    assert check(target.root, lock=tmp_path / "models.lock", fast=False) == []
    assert not (target.root / ".seeder").exists()


def test_each_problem_of_files_seeder_did_not_write(tmp_path: Path):
    # the missing model first: it must not hide the next one's problems
    lock = foreign_tree(tmp_path / "t", locked_model("gone"), locked_model())
    (tmp_path / "t" / "m" / "w.bin").write_bytes(A.upper())
    (tmp_path / "t" / "m" / "sub" / "c.json").unlink()
    (tmp_path / "t" / "m" / "extra").write_text("not pushed")
    shutil.rmtree(tmp_path / "t" / "gone")
    problems = verify(Target(tmp_path / "t"), lock)
    assert _kinds(problems) == [("gone", None, "not-installed"), ("m", "extra", "stray"),
                                ("m", "w.bin", "checksum"), ("m", "sub/c.json", "missing")]
    assert problems[0].detail == f"no directory {tmp_path / 't' / 'gone'}"
    assert problems[1].detail == "not in the lock"  # nothing was installed, so nothing written after
    assert _kinds(verify(Target(tmp_path / "t"), lock, fast=True)) == [
        ("gone", None, "not-installed"), ("m", "extra", "stray"), ("m", "sub/c.json", "missing")]


def test_a_seeder_directory_with_no_record_is_not_read_as_files(tmp_path: Path):
    # .seeder/ says seeder owns it: the state decides what is installed, not the files that happen to be there
    lock = foreign_tree(tmp_path, locked_model())
    (tmp_path / ".seeder").mkdir()
    assert Target(tmp_path).managed()
    assert _kinds(verify(Target(tmp_path), lock)) == [("m", None, "not-installed")]


def test_the_apps_check_reports_a_lock_it_cannot_use(tmp_path: Path):
    foreign_tree(tmp_path, locked_model())
    assert [(p.model, p.kind, p.detail) for p in check(tmp_path, lock=tmp_path / "none.lock")] == [
        ("*", "lock", f"{tmp_path / 'none.lock'}: no such lock")]
    (tmp_path / "bad.lock").write_text("{")
    [problem] = check(tmp_path, lock=tmp_path / "bad.lock")
    assert (problem.kind, problem.detail.startswith(f"{tmp_path / 'bad.lock'}: invalid JSON")) == ("lock", True)


def write_lock(root: Path, lock: Lock) -> Path:
    (root / "models.lock").write_text(lock.dumps())
    return root / "models.lock"
