"""The lock (``models.lock``): every model resolved to exact files, sizes and digests.

Seeding from a lock needs no hub API: it holds the commit and, per file, what
its bytes must hash to.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import LockError
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .manifest import Manifest  # only for annotations: seeder.check() never parses a manifest
from .kinds import KINDS
from .paths import check_name, check_relpath

LOCK_VERSION = 1
_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class LockedFile:
    path: str
    size: int
    sha256: str | None = None
    git_oid: str | None = None
    """Git blob id: the hub's only digest for small non-LFS files."""
    pins: tuple[tuple[str, str], ...] = ()
    """What the file's kind pins besides its digests, by the names its module declares (``FILE_PINS``): an
    s3 object's key, ETag and version; the oci tar layer that holds the file."""

    def pin(self, name: str) -> str | None:
        return next((v for k, v in self.pins if k == name), None)

    @property
    def digest(self) -> str:
        """Content address: what the cache and partial downloads are keyed by."""
        return f"sha256-{self.sha256}" if self.sha256 else f"gitsha1-{self.git_oid}"

    def to_json(self) -> dict:
        data = {"path": self.path, "size": self.size, "sha256": self.sha256, "git_oid": self.git_oid}
        return {k: v for k, v in data.items() if v is not None} | dict(self.pins)


def pins(**values: str | None) -> tuple[tuple[str, str], ...]:
    """A file's pins from keyword arguments, the unset ones left out, in name order (files compare equal)."""
    return tuple(sorted((k, v) for k, v in values.items() if v is not None))


@dataclass(frozen=True)
class LockedModel:
    name: str
    fingerprint: str
    kind: str  # a key of spec.kinds.KINDS: "repo", "url", "s3" or "oci"
    files: tuple[LockedFile, ...]
    repo: str | None = None
    """A Hugging Face repo id; for an oci model, its reference as the manifest gives it."""
    revision: str | None = None
    commit: str | None = None
    """The repo's commit; for an oci model, its manifest's digest."""
    urls: tuple[str, ...] = ()

    @cached_property  # asked once per file while installing: computing it is linear in the files
    def version(self) -> str:
        """Identifies the exact file set: two entries with equal versions install identical trees."""
        # A kind's pins only when set, so entries of other kinds keep the versions they always had.
        files = [{"path": f.path, "size": f.size, "sha256": f.sha256, "git_oid": f.git_oid, **dict(f.pins)}
                 for f in self.files]
        blob = json.dumps([self.commit, files], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict:
        data = {"name": self.name, "fingerprint": self.fingerprint, "kind": self.kind}
        data |= KINDS[self.kind].lock_json(self)
        data["files"] = [f.to_json() for f in self.files]
        return data


@dataclass(frozen=True)
class Lock:
    models: tuple[LockedModel, ...]

    def get(self, name: str) -> LockedModel | None:
        return next((m for m in self.models if m.name == name), None)

    def stale_models(self, manifest: Manifest) -> list[str]:
        """Names of manifest models this lock does not cover exactly (missing or changed)."""
        stale = []
        for spec in manifest.models:
            entry = self.get(spec.name)
            if entry is None or entry.fingerprint != spec.fingerprint:
                stale.append(spec.name)
        return stale

    def updated(self, manifest: Manifest, fresh: dict[str, LockedModel]) -> Lock:
        """This lock with ``fresh`` entries swapped in, in manifest order, without models it no longer lists."""
        return Lock(models=tuple(fresh.get(m.name) or self.get(m.name) for m in manifest.models))

    def matches(self, manifest: Manifest) -> bool:
        return not self.stale_models(manifest) and len(self.models) == len(manifest.models)

    def to_json(self) -> dict:
        return {"version": LOCK_VERSION, "models": [m.to_json() for m in self.models]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"


def lock_path_for(manifest_path: Path) -> Path:
    return manifest_path.with_name(manifest_path.stem + ".lock")


def read(path: Path) -> Lock | None:
    """Read a lock file; None when it does not exist."""
    data = read_json(path)
    return None if data is None else parse(data, path)


def read_json(path: Path) -> object:
    """A lock file's JSON, unchecked (None when there is no file), for readers of fields beyond the lock's."""
    try:
        text = path.read_text("utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise LockError(f"{path}: cannot read lock: {e}") from None
    if not text.strip():
        # Not a lock of no models: more likely one cut short (a full disk, a `> models.lock` whose command
        # failed), and resolving afresh in its place could quietly move to other commits.
        raise LockError(f"{path} is empty (delete it and run `seeder lock`)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LockError(f"{path}: invalid JSON: {e} (delete it and run `seeder lock`)") from None


def parse(data: object, path: Path | str) -> Lock:
    def fail(message: str) -> LockError:
        return LockError(f"{path}: {message} (delete it and run `seeder lock`)")

    if not isinstance(data, dict) or data.get("version") != LOCK_VERSION:
        raise fail(f"not a version {LOCK_VERSION} seeder lock")
    models = data.get("models")
    if not isinstance(models, list):
        raise fail("'models' must be a list")
    parsed = []
    for m in models:
        if not isinstance(m, dict):
            raise fail("a model entry is not an object")
        parsed.append(_parse_model(m, fail))
    if len({m.name for m in parsed}) != len(parsed):
        raise fail("duplicate model name")
    return Lock(models=tuple(parsed))


def model_from_json(entry: object, where: Path | str) -> LockedModel:
    """One model entry, as kept in a lock or in a target's state."""
    return parse({"version": LOCK_VERSION, "models": [entry]}, where).models[0]


def _parse_model(m: dict, fail) -> LockedModel:
    name = m.get("name")
    if not isinstance(name, str) or check_name(name):
        raise fail(f"invalid model name {name!r}")
    kind = m.get("kind")
    if kind not in KINDS:
        raise fail(f"model {name!r}: invalid kind {kind!r}")
    if not isinstance(m.get("fingerprint"), str):
        raise fail(f"model {name!r}: missing fingerprint")
    files_raw = m.get("files")
    if not isinstance(files_raw, list):
        raise fail(f"model {name!r}: 'files' must be a list")
    files = tuple(_parse_file(f, name, KINDS[kind].FILE_PINS, fail) for f in files_raw)
    if len({f.path for f in files}) != len(files):
        raise fail(f"model {name!r}: duplicate file path")
    fields = KINDS[kind].lock_fields(m, files, name, fail)
    return LockedModel(name=name, fingerprint=m["fingerprint"], kind=kind, files=files, **fields)


def _parse_file(f: object, name: str, kind_pins: dict, fail) -> LockedFile:
    if not isinstance(f, dict):
        raise fail(f"model {name!r}: a file entry is not an object")
    path, size, sha256, git_oid = f.get("path"), f.get("size"), f.get("sha256"), f.get("git_oid")
    if not isinstance(path, str) or (why := check_relpath(path)):
        raise fail(f"model {name!r}: file path {path!r} {why if isinstance(path, str) else 'is not a string'}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise fail(f"model {name!r}: file {path!r} has an invalid size")
    if sha256 is not None and (not isinstance(sha256, str) or not _HEX64.fullmatch(sha256)):
        raise fail(f"model {name!r}: file {path!r} has an invalid sha256")
    if git_oid is not None and (not isinstance(git_oid, str) or not _HEX40.fullmatch(git_oid)):
        raise fail(f"model {name!r}: file {path!r} has an invalid git_oid")
    if sha256 is None and git_oid is None:
        raise fail(f"model {name!r}: file {path!r} has neither sha256 nor git_oid")
    found = []
    for key, pattern in kind_pins.items():
        value = f.get(key)
        if value is not None and (not isinstance(value, str) or (pattern and not pattern.fullmatch(value))):
            raise fail(f"model {name!r}: file {path!r} has an invalid {key}")
        if value is not None:
            found.append((key, value))
    return LockedFile(path=path, size=size, sha256=sha256, git_oid=git_oid, pins=tuple(sorted(found)))
