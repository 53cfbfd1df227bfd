"""The target directory and the optional content-addressed cache: layout, state, atomic installs.

Layout of a target::

    <target>/<name>                  symlink -> .seeder/versions/<name>/<version>
    <target>/.seeder/versions/...    complete, verified file trees, one per model version
    <target>/.seeder/tmp/            partial downloads (never at a final path)
    <target>/.seeder/state.json      what is installed, with size/mtime/inode stamps
    <target>/.seeder/complete        digest of the lock last fully installed, written last
    <target>/.seeder/lock            the target's flock: one writer at a time

The visible name is a relative symlink swapped by rename, so a reader sees one
complete version or the other, and it resolves inside any container mount.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .. import failpoints
from ..errors import StorageError, UsageError
from ..spec.lock import Lock, LockedModel
from . import state as states
from .fs import flocked, fsync_dir, stamp, storage_error, write_atomic
from .state import FileRecord, ModelRecord, State


def lock_digest(lock: Lock) -> str:
    return hashlib.sha256(lock.dumps().encode()).hexdigest()


class Target:
    def __init__(self, root: Path):
        self.root = root
        self.meta = root / ".seeder"
        self.tmp = self.meta / "tmp"
        self.versions = self.meta / "versions"
        self.state_file = self.meta / "state.json"
        self.marker = self.meta / "complete"
        self.lock_copy = self.meta / "models.lock"

    # -- reading (no side effects: used by the warm path and by apps) --

    def read_state(self) -> State:
        """What is installed. Missing or damaged records are left out: they only cost a re-check on disk."""
        return states.read(self.state_file)

    def visible(self, name: str, path: str = "") -> Path:
        return self.root / name / path if path else self.root / name

    def version_dir(self, model: LockedModel) -> Path:
        return self.versions / model.name / model.version

    def intact(self, model: LockedModel, record: ModelRecord | None) -> bool:
        """True when ``record`` installed exactly ``model`` and every file still carries its stamp."""
        if record is None or record.model != model:
            return False
        for file in model.files:
            rec = record.files.get(file.path)
            if rec is None or stamp(self.visible(model.name, file.path)) != rec.stamp:
                return False
        return True

    def is_complete(self, lock: Lock) -> bool:
        try:
            if self.marker.read_text().strip() != lock_digest(lock):
                return False
        except OSError:
            return False
        state = self.read_state()
        return all(self.intact(m, state.get(m.name)) for m in lock.models)

    # -- writing (callers hold :meth:`exclusive`) --

    def ensure(self) -> None:
        for d in (self.root, self.meta, self.tmp, self.versions):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise storage_error(e, "create", d) from None
            if d is not self.root and d.is_symlink():
                raise StorageError(f"{d} is a symlink; refusing to write through it")
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"cannot write {self.root}: permission denied")

    def check_inside(self, path: Path) -> None:
        """A symlink planted in the state directory must not send writes outside the target."""
        # realpath follows a dangling link and folds '..' in parts not created yet: checked before creating.
        real, base = os.path.realpath(path), os.path.realpath(self.versions)
        if os.path.commonpath([real, base]) != base:
            raise StorageError(f"{path} resolves outside {self.root} (a planted symlink?); refusing to write")

    @contextmanager
    def exclusive(self):
        """The target's flock: one seeder writes a target at a time, across processes and containers."""
        self.ensure()
        with flocked(self.meta / "lock", waiting=f"waiting for another seeder on {self.root}"):
            yield

    def write_state(self, state: State) -> None:
        write_atomic(self.state_file, states.dumps(state))

    def record(self, model: LockedModel, sha256s: dict[str, str]) -> ModelRecord:
        files = {}
        for file in model.files:
            st = stamp(self.version_dir(model) / file.path)
            if st is None:
                raise StorageError(f"{self.version_dir(model) / file.path} vanished during install")
            files[file.path] = FileRecord(stamp=st, sha256=sha256s.get(file.path) or file.sha256)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return ModelRecord(model=model, installed_at=now, files=files)

    def publish(self, model: LockedModel) -> None:
        """Point ``<target>/<name>`` at the model's version directory, atomically."""
        link = self.visible(model.name)
        if link.exists() and not link.is_symlink():
            raise UsageError(f"{link} exists and is not managed by seeder; move it away and run again")
        rel = os.path.relpath(self.version_dir(model), self.root)
        tmp = self.tmp / f"link-{model.name}-{os.getpid()}"
        try:
            tmp.unlink(missing_ok=True)
            os.symlink(rel, tmp)
            failpoints.hit("before-switch")
            os.replace(tmp, link)
        except OSError as e:
            raise storage_error(e, "publish", link) from None
        fsync_dir(self.root)

    def old_versions(self, model: LockedModel) -> list[Path]:
        try:
            return [d for d in (self.versions / model.name).iterdir() if d.name != model.version]
        except FileNotFoundError:
            return []

    def prune_versions(self, model: LockedModel) -> None:
        """Delete older versions of a model; readers holding their files open keep working."""
        for old in self.old_versions(model):
            shutil.rmtree(old, ignore_errors=True)

    def remove_model(self, name: str) -> None:
        """Unpublish a model the manifest no longer lists, then delete its files."""
        link = self.visible(name)
        if link.is_symlink():
            link.unlink()
            fsync_dir(self.root)
        shutil.rmtree(self.versions / name, ignore_errors=True)

    def write_marker(self, lock: Lock) -> None:
        write_atomic(self.marker, lock_digest(lock) + "\n")

    def clear_marker(self) -> None:
        self.marker.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.meta).free
