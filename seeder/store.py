"""The target directory and the optional content-addressed cache: layout, state, atomic installs.

Layout of a target::

    <target>/<name>                  symlink -> .seeder/versions/<name>/<version>
    <target>/.seeder/versions/...    complete, verified file trees, one per model version
    <target>/.seeder/tmp/            partial downloads (never at a final path)
    <target>/.seeder/state.json      what is installed, with size/mtime/inode stamps
    <target>/.seeder/complete        digest of the lock last fully installed, written last
    <target>/.seeder/lock            cross-process mutex

The visible name is a relative symlink swapped by rename, so a reader sees one
complete version or the other, and it resolves inside any container mount.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from . import failpoints
from .errors import SeederError, StorageError, UsageError
from .lock import Lock, LockedFile, LockedModel, model_from_json
from .paths import check_name

STATE_VERSION = 1


@contextmanager
def file_lock(path: Path):
    """Hold an exclusive ``flock`` on ``path`` (created if missing), waiting for it as long as it takes.

    The kernel releases it when the process dies, so a killed seeder never leaves a stale lock. The
    file itself stays: removing it would let two processes each hold "the" lock on different inodes.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise storage_error(e, "lock", path) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def storage_error(e: OSError, action: str, path: Path | str) -> StorageError:
    reasons = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}
    return StorageError(f"cannot {action} {path}: {reasons.get(e.errno, e.strerror or str(e))}")


def regular_or_absent(path: Path) -> None:
    """Remove whatever is at ``path`` unless it is a regular file: a planted symlink must not redirect writes."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    except OSError as e:
        raise storage_error(e, "inspect", path) from None
    if not stat.S_ISREG(st.st_mode):
        try:
            path.unlink()
        except OSError as e:
            raise storage_error(e, "remove", path) from None


def copy_hashed(source: BinaryIO, dest: Path, hasher) -> None:
    """Copy a stream into a new file, feeding every block to ``hasher``, and make it durable."""
    with open(dest, "wb") as out:
        while block := source.read(1 << 20):
            hasher.update(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        failpoints.hit(f"before-rename:{path.name}")
        os.replace(tmp, path)
    except OSError as e:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise storage_error(e, "write", path) from None
    fsync_dir(path.parent)


def stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def lock_digest(lock: Lock) -> str:
    return hashlib.sha256(lock.dumps().encode()).hexdigest()


@dataclass
class Installed:
    """One model as recorded in the target's state: the lock entry it installed, and per-file stamps."""

    model: LockedModel
    installed_at: str
    files: dict[str, dict]

    @property
    def version(self) -> str:
        return self.model.version

    def to_json(self) -> dict:
        return {"version": self.version, "installed_at": self.installed_at, "entry": self.model.to_json(),
                "files": self.files}


def _installed(name: object, raw: object) -> Installed | None:
    """A state record, only if every name and path in it is one seeder could have written."""
    try:
        if not isinstance(name, str) or check_name(name) or not isinstance(raw, dict):
            return None
        model = model_from_json(raw.get("entry"), "state")
        files = raw.get("files")
        if model.name != name or raw.get("version") != model.version or not isinstance(files, dict):
            return None
        if set(files) != {f.path for f in model.files} or not all(
                isinstance(rec, dict) and isinstance(rec.get("stamp"), list) and len(rec["stamp"]) == 3
                for rec in files.values()):
            return None
        return Installed(model=model, installed_at=str(raw.get("installed_at")), files=files)
    except SeederError:
        return None


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

    def read_state(self) -> dict[str, Installed]:
        """What is installed. Missing or damaged records are left out: they only cost a re-check on disk."""
        try:
            data = json.loads(self.state_file.read_text("utf-8"))
            models = data["models"] if data.get("version") == STATE_VERSION else {}
            return {name: rec for name, raw in models.items() if (rec := _installed(name, raw))}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def visible(self, name: str, path: str = "") -> Path:
        return self.root / name / path if path else self.root / name

    def version_dir(self, model: LockedModel) -> Path:
        return self.versions / model.name / model.version

    def intact(self, model: LockedModel, record: Installed | None) -> bool:
        """True when ``record`` installed exactly ``model`` and every file still carries its stamp."""
        if record is None or record.model != model:
            return False
        for file in model.files:
            rec = record.files.get(file.path)
            if rec is None or stamp(self.visible(model.name, file.path)) != tuple(rec["stamp"]):
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
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent  # check before creating anything beneath a planted link
        real, base = os.path.realpath(existing), os.path.realpath(self.versions)
        if os.path.commonpath([real, base]) != base:
            raise StorageError(f"{path} resolves outside {self.root} (a planted symlink?); refusing to write")

    @contextmanager
    def exclusive(self):
        self.ensure()
        with file_lock(self.meta / "lock"):
            yield

    def write_state(self, state: dict[str, Installed]) -> None:
        data = {"version": STATE_VERSION, "models": {n: r.to_json() for n, r in sorted(state.items())}}
        write_atomic(self.state_file, json.dumps(data, indent=1) + "\n")

    def record(self, model: LockedModel, sha256s: dict[str, str]) -> Installed:
        files = {}
        for file in model.files:
            st = stamp(self.version_dir(model) / file.path)
            if st is None:
                raise StorageError(f"{self.version_dir(model) / file.path} vanished during install")
            files[file.path] = {"stamp": list(st), "sha256": sha256s.get(file.path) or file.sha256}
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return Installed(model=model, installed_at=now, files=files)

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


class Cache:
    """Content-addressed store shared across targets and builds (a BuildKit cache mount)."""

    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self.locks = root / "locks"

    def ensure(self) -> None:
        for d in (self.blobs, self.tmp, self.locks):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise storage_error(e, "create", d) from None

    def blob(self, file: LockedFile) -> Path:
        return self.blobs / file.digest

    def has(self, file: LockedFile) -> bool:
        st = stamp(self.blob(file))
        return st is not None and st[0] == file.size

    def exclusive(self, file: LockedFile):
        return file_lock(self.locks / f"{file.digest}.lock")

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free
