"""How a target arranges a model's files for its readers: ``plain`` (``<target>/<name>/…``) is here;
``hf-cache`` (a Hugging Face ``HF_HOME``) is :mod:`.hf_layout`.

A layout answers four questions per model: where its verified bytes are placed, what path a reader
opens, how a complete model becomes visible in one atomic step, and what to delete once a newer
version is visible. Everything else about a target (state, stamps, the marker, the flock) is the
same for every layout.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .. import failpoints
from ..errors import UsageError
from ..spec.lock import LockedFile, LockedModel
from ..spec.manifest import LAYOUTS
from .fs import fsync_dir, storage_error

PLAIN, HF_CACHE = LAYOUTS


class Plain:
    """``<target>/<name>`` is a relative symlink to ``.seeder/versions/<name>/<version>/``, a real file
    tree, swapped by one rename: a reader sees one whole version or the other."""

    name = PLAIN

    def __init__(self, root: Path, meta: Path):
        self.root = root
        self.versions = meta / "versions"
        self.tmp = meta / "tmp"

    def version_dir(self, model: LockedModel) -> Path:
        return self.versions / model.name / model.version

    def file_path(self, model: LockedModel, file: LockedFile) -> Path:
        return self.version_dir(model) / file.path

    def path_of(self, model: LockedModel, path: str = "") -> Path:
        return self.root / model.name / path if path else self.root / model.name

    def base(self, model: LockedModel) -> Path:
        """Where this model's files may be written: anything resolving elsewhere is a planted link."""
        return self.versions

    def publish(self, model: LockedModel, installed: list[LockedModel]) -> None:
        link = self.path_of(model)
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

    def old_versions(self, model: LockedModel, installed: list[LockedModel]) -> list[Path]:
        try:
            return [d for d in (self.versions / model.name).iterdir() if d.name != model.version]
        except FileNotFoundError:
            return []

    def prune(self, model: LockedModel, installed: list[LockedModel]) -> None:
        """Delete older versions of a model; readers holding their files open keep working."""
        for old in self.old_versions(model, installed):
            shutil.rmtree(old, ignore_errors=True)

    def remove(self, model: LockedModel, installed: list[LockedModel]) -> None:
        """Unpublish a model the manifest no longer lists, then delete its files."""
        link = self.path_of(model)
        if link.is_symlink():
            link.unlink()
            fsync_dir(self.root)
        shutil.rmtree(self.versions / model.name, ignore_errors=True)
