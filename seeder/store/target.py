"""The target directory: state, stamps, the flock, atomic installs; where files go is its layout's.

A target::

    <target>/<name>                  plain layout: symlink -> .seeder/versions/<name>/<version>
    <target>/hub/models--<org>--<name>/   hf-cache layout: hub models as huggingface_hub lays them out
    <target>/.seeder/versions/...    complete, verified file trees, one per model version (plain)
    <target>/.seeder/tmp/            partial downloads (never at a final path)
    <target>/.seeder/state.json      what is installed, with size/mtime/inode stamps
    <target>/.seeder/layout          the layout the target was seeded with (absent: plain)
    <target>/.seeder/complete        digest of the lock last fully installed, written last
    <target>/.seeder/lock            the target's flock: one writer at a time

A model becomes visible in one atomic step (a symlink or a ref replaced by rename), so a reader sees
one complete version or the other; links are relative, so they resolve inside any container mount.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ..errors import StorageError, UsageError
from ..spec.lock import Lock, LockedFile, LockedModel
from . import state as states
from .fs import flocked, stamp, storage_error, write_atomic
from .hf_layout import HfCache
from .layout import LAYOUTS, PLAIN, Plain
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
        self.layout_file = self.meta / "layout"
        self.layout = self._layout(self.recorded_layout())

    def _layout(self, name: str) -> Plain | HfCache:
        return HfCache(self.root, self.meta) if name == "hf-cache" else Plain(self.root, self.meta)

    def recorded_layout(self) -> str:
        try:
            name = self.layout_file.read_text(encoding="utf-8").strip()
        except OSError:
            return PLAIN
        return name if name in LAYOUTS else PLAIN

    # -- reading (no side effects: used by the warm path and by apps) --

    def managed(self) -> bool:
        """Whether seeder wrote this target (it has ``.seeder/``). One it did not (an image volume, a copy
        made by other tools) has no state to hold it to: its files are read as the plain layout lays them
        out, ``<target>/<name>/<path>``, and only against a lock."""
        return self.meta.is_dir()

    def read_state(self) -> State:
        """What is installed. Missing or damaged records are left out: they only cost a re-check on disk."""
        return states.read(self.state_file)

    def path_of(self, model: LockedModel, path: str = "") -> Path:
        """What a reader opens: the model's directory, or one of its files."""
        return self.layout.path_of(model, path)

    def file_path(self, model: LockedModel, file: LockedFile) -> Path:
        """Where the file's verified bytes are placed (for hf-cache, a blob that snapshots link to)."""
        return self.layout.file_path(model, file)

    def intact(self, model: LockedModel, record: ModelRecord | None) -> bool:
        """True when ``record`` installed exactly ``model`` and every file still carries its stamp."""
        if record is None or record.model != model:
            return False
        for file in model.files:
            rec = record.files.get(file.path)
            if rec is None or stamp(self.path_of(model, file.path)) != rec.stamp:
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

    def adopt(self, layout: str) -> None:
        """Record the manifest's layout; a target that holds models in another one is refused."""
        current = self.recorded_layout()
        if layout != current and self.read_state():
            raise UsageError(f"{self.root} holds models in the {current} layout and the manifest asks for "
                             f"layout = {layout!r}: seed a new target, or empty this one first")
        if layout != current or not self.layout_file.exists():
            write_atomic(self.layout_file, layout + "\n")
        self.layout = self._layout(layout)

    def check_inside(self, model: LockedModel, path: Path) -> None:
        """A symlink planted in the target must not send writes outside it."""
        # realpath follows a dangling link and folds '..' in parts not created yet: checked before creating.
        real, base = os.path.realpath(path), os.path.realpath(self.layout.base(model))
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
            st = stamp(self.file_path(model, file))
            if st is None:
                raise StorageError(f"{self.file_path(model, file)} vanished during install")
            files[file.path] = FileRecord(stamp=st, sha256=sha256s.get(file.path) or file.sha256)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return ModelRecord(model=model, installed_at=now, files=files)

    def publish(self, model: LockedModel, installed: list[LockedModel]) -> None:
        """Make the model's complete files visible in one atomic step; ``installed``: every model the
        target holds once this run is done (models sharing a repo share its refs)."""
        self.layout.publish(model, installed)

    def old_versions(self, model: LockedModel, installed: list[LockedModel]) -> list[Path]:
        return self.layout.old_versions(model, installed)

    def prune_versions(self, model: LockedModel, installed: list[LockedModel]) -> None:
        """Delete older versions of a model; readers holding their files open keep working."""
        self.layout.prune(model, installed)

    def remove_model(self, model: LockedModel, installed: list[LockedModel]) -> None:
        """Unpublish a model the manifest no longer lists, then delete its files."""
        self.layout.remove(model, installed)

    def write_marker(self, lock: Lock) -> None:
        write_atomic(self.marker, lock_digest(lock) + "\n")

    def clear_marker(self) -> None:
        self.marker.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.meta).free
