"""``seeder.store.target``'s integrity-critical part on real files: the warm path's completeness check
(marker + stamps), the planted-symlink guard, the records and the symlink swap that publishes a version.
test_publish.py, test_crash.py and test_hostile.py cover them through the CLI and a second process (written
against the mutants tests/mutation found alive, issue #15)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from seeder.errors import StorageError, UsageError
from seeder.spec.lock import Lock, LockedFile, LockedModel
from seeder.store.state import FileRecord, ModelRecord
from seeder.store.target import Target, lock_digest
from tests.conftest import sha256

A, B = b"weights v1", b"config v1"


def locked_model(name: str = "m", a: bytes = A, b: bytes = B) -> LockedModel:
    files = (LockedFile(path="w.bin", size=len(a), sha256=sha256(a)),
             LockedFile(path="sub/c.json", size=len(b), sha256=sha256(b)))
    return LockedModel(name=name, fingerprint="f", kind="repo", files=files, repo="org/m", revision="main",
                       commit="c" * 40)


def installed_target(root: Path, *models: LockedModel) -> tuple[Target, Lock]:
    """A target with ``models`` written, recorded and published, as install leaves it (marker included)."""
    target = Target(root)
    target.ensure()
    state = {}
    for model in models:
        for file in model.files:
            path = target.layout.version_dir(model) / file.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(A if file.path == "w.bin" else B)
        state[model.name] = target.record(model, {})
        target.publish(model, [model])
    target.write_state(state)
    lock = Lock(models=models)
    target.write_marker(lock)
    return target, lock


def test_lock_digest_is_the_sha256_of_the_lock_text():
    lock = Lock(models=(locked_model(),))
    assert lock_digest(lock) == hashlib.sha256(lock.dumps().encode()).hexdigest()


def test_a_complete_target_is_complete(tmp_path: Path):
    target, lock = installed_target(tmp_path / "t", locked_model())
    assert target.marker.read_text() == lock_digest(lock) + "\n"
    assert target.is_complete(lock)


def test_no_marker_or_another_locks_marker_is_not_complete(tmp_path: Path):
    target, lock = installed_target(tmp_path / "t", locked_model())
    assert not target.is_complete(Lock(models=(locked_model(a=b"other"),)))
    target.clear_marker()
    assert not target.marker.exists()
    assert not target.is_complete(lock)
    target.clear_marker()  # nothing to clear is fine


def test_a_file_changed_since_install_makes_the_target_incomplete(tmp_path: Path):
    model = locked_model()
    target, lock = installed_target(tmp_path / "t", model)
    path = (target.root / "m" / "w.bin")
    st = path.stat()
    path.write_bytes(b"WEIGHTS v1")  # same size, same inode: only the mtime tells, and by a nanosecond
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert not target.is_complete(lock)


def test_intact_needs_the_same_entry_and_every_stamp(tmp_path: Path):
    model = locked_model()
    target, _ = installed_target(tmp_path / "t", model)
    record = target.read_state()["m"]
    assert target.intact(model, record)
    assert not target.intact(model, None)
    assert not target.intact(locked_model(a=b"weights v2"), record)  # another entry
    files = dict(record.files)
    del files["sub/c.json"]
    assert not target.intact(model, ModelRecord(model=model, installed_at="x", files=files))
    files = dict(record.files, **{"w.bin": FileRecord(stamp=(1, 2, 3), sha256=None)})
    assert not target.intact(model, ModelRecord(model=model, installed_at="x", files=files))


def test_is_complete_checks_every_model(tmp_path: Path):
    one, two = locked_model("one"), locked_model("two")
    target, lock = installed_target(tmp_path / "t", one, two)
    assert target.is_complete(lock)
    (target.root / "two" / "w.bin").unlink()
    assert not target.is_complete(lock)


def test_record_stamps_the_files_and_keeps_the_digests_given(tmp_path: Path):
    model = locked_model()
    target, _ = installed_target(tmp_path / "t", model)
    rec = target.record(model, {"w.bin": "computed"})
    st = (target.layout.version_dir(model) / "w.bin").stat()
    assert rec.files["w.bin"] == FileRecord(stamp=(st.st_size, st.st_mtime_ns, st.st_ino), sha256="computed")
    assert rec.files["sub/c.json"].sha256 == sha256(B)  # not given: the lock's
    assert rec.model == model


def test_record_of_a_vanished_file_is_a_storage_error(tmp_path: Path):
    model = locked_model()
    target, _ = installed_target(tmp_path / "t", model)
    (target.layout.version_dir(model) / "w.bin").unlink()
    with pytest.raises(StorageError, match="vanished during install"):
        target.record(model, {})


def test_publish_points_a_relative_link_at_the_version_and_leaves_nothing_behind(tmp_path: Path):
    model = locked_model()
    target, _ = installed_target(tmp_path / "t", model)
    link = (target.root / "m")
    assert os.readlink(link) == f".seeder/versions/m/{model.version}"
    assert (link / "w.bin").read_bytes() == A
    assert list(target.tmp.iterdir()) == []


def test_publish_swaps_the_link_to_the_new_version(tmp_path: Path):
    old, new = locked_model(), locked_model(a=b"weights v2")
    target, _ = installed_target(tmp_path / "t", old)
    target.layout.version_dir(new).mkdir(parents=True)
    target.publish(new, [new])
    assert os.readlink((target.root / "m")) == f".seeder/versions/m/{new.version}"
    assert list(target.tmp.iterdir()) == []


def test_publish_replaces_a_dangling_link_and_a_leftover_temporary_link(tmp_path: Path):
    model = locked_model()
    target, _ = installed_target(tmp_path / "t", model)
    os.symlink("nowhere", target.tmp / f"link-m-{os.getpid()}")  # a run with our pid died mid-publish
    (target.root / "m").unlink()
    os.symlink(".seeder/versions/m/gone", (target.root / "m"))
    target.publish(model, [model])
    assert os.readlink((target.root / "m")) == f".seeder/versions/m/{model.version}"


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_publish_refuses_to_replace_what_seeder_did_not_make(kind, tmp_path: Path):
    model = locked_model()
    target, _ = installed_target(tmp_path / "t", model)
    link = (target.root / "m")
    link.unlink()
    link.mkdir() if kind == "dir" else link.write_bytes(b"mine")
    with pytest.raises(UsageError, match="not managed by seeder"):
        target.publish(model, [model])
    assert link.is_dir() if kind == "dir" else link.read_bytes() == b"mine"


def test_publish_that_cannot_write_is_a_storage_error(tmp_path: Path):
    model = locked_model()
    target, _ = installed_target(tmp_path / "t", model)
    target.tmp.rmdir()
    with pytest.raises(StorageError):
        target.publish(model, [model])


def test_check_inside_accepts_paths_below_the_versions_even_not_yet_made(tmp_path: Path):
    target, _ = installed_target(tmp_path / "t", locked_model())
    target.check_inside(locked_model(), target.versions / "m")
    target.check_inside(locked_model(), target.versions / "new" / "v" / "deep" / "file.bin")


@pytest.mark.parametrize("where", ["model", "deeper"])
def test_check_inside_refuses_a_planted_symlink_out(where, tmp_path: Path):
    target, _ = installed_target(tmp_path / "t", locked_model())
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = target.versions / "evil"
    os.symlink(outside, planted)
    path = planted / "v" / "file.bin" if where == "deeper" else planted
    with pytest.raises(StorageError, match="resolves outside"):
        target.check_inside(locked_model(), path)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("how", ["dangling link", "dotdot not yet made"])
def test_check_inside_refuses_what_would_lead_out_once_created(how, tmp_path: Path):
    target, _ = installed_target(tmp_path / "t", locked_model())
    if how == "dangling link":
        os.symlink(tmp_path / "outside" / "not-yet", target.versions / "evil")
        path = target.versions / "evil" / "v" / "file.bin"
    else:
        path = target.versions / "new" / ".." / ".." / ".." / "escaped" / "file.bin"
    with pytest.raises(StorageError, match="resolves outside"):
        target.check_inside(locked_model(), path)


def test_check_inside_refuses_a_path_that_only_exists_outside(tmp_path: Path):
    target = Target(tmp_path / "t")
    target.ensure()
    with pytest.raises(StorageError):
        target.check_inside(locked_model(), tmp_path / "elsewhere" / "x")
