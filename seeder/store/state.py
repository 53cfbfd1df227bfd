"""The target's record of what is installed (``.seeder/state.json``), as typed records.

A record is trusted only if every name and path in it is one seeder could have written: a tampered
or damaged state file costs a re-check on disk, never a write outside the target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import SeederError
from ..spec.lock import LockedModel, model_from_json
from ..spec.paths import check_name
from .fs import Stamp

STATE_VERSION = 1


@dataclass(frozen=True)
class FileRecord:
    stamp: Stamp
    sha256: str | None

    def to_json(self) -> dict:
        return {"stamp": list(self.stamp), "sha256": self.sha256}

    @classmethod
    def from_json(cls, raw: object) -> FileRecord | None:
        if not isinstance(raw, dict):
            return None
        st, sha256 = raw.get("stamp"), raw.get("sha256")
        if not (isinstance(st, list) and len(st) == 3 and all(isinstance(n, int) for n in st)):
            return None
        return cls(stamp=(st[0], st[1], st[2]), sha256=sha256 if isinstance(sha256, str) else None)


@dataclass
class ModelRecord:
    """One model as installed: the lock entry it installed, and per-file stamps and digests."""

    model: LockedModel
    installed_at: str
    files: dict[str, FileRecord]

    @property
    def version(self) -> str:
        return self.model.version

    def sha256(self, file_path: str) -> str | None:
        """The file's sha256: recorded at install, else pinned by the lock."""
        rec = self.files.get(file_path)
        return (rec.sha256 if rec else None) or next((f.sha256 for f in self.model.files if f.path == file_path), None)

    def to_json(self) -> dict:
        return {"version": self.version, "installed_at": self.installed_at, "entry": self.model.to_json(),
                "files": {p: r.to_json() for p, r in self.files.items()}}


State = dict[str, ModelRecord]


def _record(name: object, raw: object) -> ModelRecord | None:
    try:
        if not isinstance(name, str) or check_name(name) or not isinstance(raw, dict):
            return None
        model = model_from_json(raw.get("entry"), "state")
        files = raw.get("files")
        if model.name != name or raw.get("version") != model.version or not isinstance(files, dict):
            return None
        records = {p: FileRecord.from_json(r) for p, r in files.items()}
        if set(records) != {f.path for f in model.files} or None in records.values():
            return None
        return ModelRecord(model=model, installed_at=str(raw.get("installed_at")), files=records)
    except SeederError:
        return None


def read(path: Path) -> State:
    """What is installed. Missing or damaged records are left out."""
    try:
        data = json.loads(path.read_text("utf-8"))
        models = data["models"] if data.get("version") == STATE_VERSION else {}
        return {name: rec for name, raw in models.items() if (rec := _record(name, raw))}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def readable(path: Path) -> bool:
    """Whether the state file parses at all (a damaged one is ignored, which users should hear about)."""
    try:
        data = json.loads(path.read_text("utf-8"))
        return isinstance(data, dict) and data.get("version") == STATE_VERSION
    except (OSError, ValueError):
        return False


def dumps(state: State) -> str:
    data = {"version": STATE_VERSION, "models": {n: r.to_json() for n, r in sorted(state.items())}}
    return json.dumps(data, indent=1) + "\n"
