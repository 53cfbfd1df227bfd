"""Parse ``models.toml`` into plain typed data.

Every problem becomes a :class:`ManifestError` naming the file, the model and
the field, so the CLI can exit 2 with one clear line.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ManifestError
from .kinds import KINDS, RepoSource, S3Source, Source, UrlSource
from .paths import check_name

__all__ = ["LAYOUTS", "Manifest", "ModelSpec", "RepoSource", "S3Source", "UrlSource", "load", "parse"]

_COMMON_KEYS = {"name"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: Source

    @property
    def kind(self) -> str:
        """The lock entry kind this resolves to, which names its source (see :mod:`seeder.sources`)."""
        return self.source.kind

    @property
    def fingerprint(self) -> str:
        """Digest of everything that decides what gets resolved: a lock entry is stale when it differs."""
        blob = json.dumps({"name": self.name, self.kind: asdict(self.source)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


LAYOUTS = ("plain", "hf-cache")
_TOP_KEYS = {"layout", "models"}


@dataclass(frozen=True)
class Manifest:
    path: Path
    models: tuple[ModelSpec, ...] = field(default_factory=tuple)
    layout: str = "plain"
    """How the target arranges files: ``plain`` (``<target>/<name>/``) or ``hf-cache`` (an ``HF_HOME``)."""

    def get(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)


def load(path: Path) -> Manifest:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(path, "no such file (set --manifest or SEEDER_MANIFEST)") from None
    except OSError as e:
        raise ManifestError(path, f"cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ManifestError(path, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(path, f"invalid TOML: {e}") from None
    return parse(data, path)


def parse(data: dict, path: Path) -> Manifest:
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ManifestError(path, f"unknown top-level key {sorted(unknown)[0]!r} (expected layout and [[models]])")
    layout = data.get("layout", "plain")
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ManifestError(path, f"layout = {layout!r}: expected one of {', '.join(map(repr, LAYOUTS))}")
    models = data.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise ManifestError(path, "'models' must be an array of tables ([[models]])")
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(models):
        spec = _parse_model(entry, index, path)
        if spec.name in seen:
            raise ManifestError(path, "duplicate name", spec.name, "name")
        if layout == "hf-cache" and spec.name == "hub":
            raise ManifestError(path, "'hub' is the hf-cache layout's own directory: choose another name",
                                spec.name, "name")
        seen.add(spec.name)
        specs.append(spec)
    return Manifest(path=path, models=tuple(specs), layout=layout)


def _parse_model(entry: dict, index: int, path: Path) -> ModelSpec:
    name = entry.get("name")
    label = name if isinstance(name, str) else f"#{index + 1}"
    if name is None:
        raise ManifestError(path, "missing required field", label, "name")
    if not isinstance(name, str):
        raise ManifestError(path, "must be a string", label, "name")
    if why := check_name(name):
        raise ManifestError(path, why, label, "name")

    def fail(key: str, message: str) -> ManifestError:
        return ManifestError(path, message, name, key)

    kinds = [k for k in KINDS if k in entry]
    if len(kinds) != 1:
        labels = [m.LABEL for m in KINDS.values()]
        raise fail(next(iter(KINDS)), f"set exactly one of {', '.join(labels[:-1])} or {labels[-1]}")
    kind = KINDS[kinds[0]]
    for key in entry:
        if key not in _COMMON_KEYS | kind.KEYS:
            others = [k for k, m in KINDS.items() if key in m.KEYS]
            hint = f" (only valid with '{others[0]}')" if others else ""
            raise fail(key, f"unknown key{hint}")
    return ModelSpec(name=name, source=kind.parse(entry, fail))
