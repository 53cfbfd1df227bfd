"""The ``hf-cache`` layout: the target is an ``HF_HOME`` that apps read by model id with ``HF_HUB_OFFLINE=1``.

Hub models are laid out exactly as huggingface_hub writes its cache (see
/work/shared/notes/hf-cache-layout.md and huggingface_hub's ``file_download.py``)::

    <target>/hub/models--<org>--<name>/blobs/<etag>            sha256 for LFS files, git blob sha1 otherwise
    <target>/hub/models--<org>--<name>/snapshots/<commit>/<path>   relative symlink to ../../blobs/<etag>
    <target>/hub/models--<org>--<name>/refs/<revision>          the commit, no newline

Models from other sources stay at ``<target>/<name>/`` (:class:`~.layout.Plain`), and seeder's state
stays in ``.seeder/``, outside ``hub/``, so ``scan_cache_dir()`` sees only repos. A reader only ever
follows ``refs -> snapshots/<commit> -> blobs``: a snapshot is complete before a ref names it, refs
are replaced by rename, and a commit's files never change, so a snapshot only ever gains links.
No ``trees/`` listing is written (with one, ``snapshot_download`` would call a partial file set
incomplete).

When several models use one repo, each gets ``refs/<its revision>``; ``refs/main`` (what
``from_pretrained("org/name")`` loads) names the commit of the model whose revision is ``main``,
else of the first such model in the manifest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .. import failpoints
from ..spec.lock import LockedFile, LockedModel
from ..spec.paths import check_relpath
from .fs import fsync_dir, storage_error
from .layout import HF_CACHE, Plain


def repo_folder(repo: str) -> str:
    """``org/name`` -> ``models--org--name``, as huggingface_hub names it."""
    return "models--" + repo.replace("/", "--")


def main_owner(models: list[LockedModel], repo: str) -> LockedModel | None:
    """The model whose commit ``refs/main`` of ``repo`` names."""
    using = [m for m in models if m.kind == "repo" and m.repo == repo]
    return next((m for m in using if m.revision == "main"), using[0] if using else None)


class HfCache:
    name = HF_CACHE

    def __init__(self, root: Path, meta: Path):
        self.root = root
        self.hub = root / "hub"
        self.tmp = meta / "tmp"
        self.plain = Plain(root, meta)

    def repo_dir(self, model: LockedModel) -> Path:
        return self.hub / repo_folder(model.repo)

    def file_path(self, model: LockedModel, file: LockedFile) -> Path:
        if model.kind != "repo":
            return self.plain.file_path(model, file)
        return self.repo_dir(model) / "blobs" / file.digest.partition("-")[2]

    def path_of(self, model: LockedModel, path: str = "") -> Path:
        if model.kind != "repo":
            return self.plain.path_of(model, path)
        snapshot = self.repo_dir(model) / "snapshots" / model.commit
        return snapshot / path if path else snapshot

    def base(self, model: LockedModel) -> Path:
        return self.plain.base(model) if model.kind != "repo" else self.hub

    # -- making a model visible --

    def publish(self, model: LockedModel, installed: list[LockedModel]) -> None:
        if model.kind != "repo":
            return self.plain.publish(model, installed)
        for file in model.files:
            link = self.path_of(model, file.path)
            self._symlink(os.path.relpath(self.file_path(model, file), link.parent), link)
        fsync_dir(self.path_of(model))
        failpoints.hit("before-switch")
        names = [model.revision] if model.revision and model.revision != model.commit else []
        if main_owner(installed, model.repo) is model and "main" not in names:
            names.append("main")
        for name in names:
            if check_relpath(name) is None:  # a branch name is a path under refs/ ("refs/pr/1" too)
                self._write_ref(self.repo_dir(model) / "refs" / name, model.commit)

    def _symlink(self, target: str, link: Path) -> None:
        try:
            if link.is_symlink() and os.readlink(link) == target:
                return
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.tmp / f"snapshot-link-{os.getpid()}"
            tmp.unlink(missing_ok=True)
            os.symlink(target, tmp)
            os.replace(tmp, link)
        except OSError as e:
            raise storage_error(e, "publish", link) from None

    def _write_ref(self, ref: Path, commit: str) -> None:
        # No newline: huggingface_hub and TGI read a ref without stripping it.
        tmp = self.tmp / f"ref-{os.getpid()}"
        try:
            ref.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="ascii") as fh:
                fh.write(commit)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, ref)
        except OSError as e:
            raise storage_error(e, "publish", ref) from None
        fsync_dir(ref.parent)

    # -- after a newer version is visible --

    def old_versions(self, model: LockedModel, installed: list[LockedModel]) -> list[Path]:
        if model.kind != "repo":
            return self.plain.old_versions(model, installed)
        keep = {m.commit for m in installed if m.kind == "repo" and m.repo == model.repo}
        try:
            return [d for d in (self.repo_dir(model) / "snapshots").iterdir() if d.name not in keep]
        except FileNotFoundError:
            return []

    def prune(self, model: LockedModel, installed: list[LockedModel]) -> None:
        if model.kind != "repo":
            return self.plain.prune(model, installed)
        self._collect(model, self.old_versions(model, installed), installed)

    def remove(self, model: LockedModel, installed: list[LockedModel]) -> None:
        if model.kind != "repo":
            return self.plain.remove(model, installed)
        owner = main_owner(installed, model.repo)
        if owner is None:
            shutil.rmtree(self.repo_dir(model), ignore_errors=True)
            return
        self._write_ref(self.repo_dir(model) / "refs" / "main", owner.commit)
        self._collect(model, self.old_versions(model, installed), installed)

    def _collect(self, model: LockedModel, snapshots: list[Path], installed: list[LockedModel]) -> None:
        """Delete ``snapshots``, the refs that named them, and the blobs no other snapshot links to."""
        repo = self.repo_dir(model)
        gone = {d.name for d in snapshots}
        for ref in (repo / "refs").rglob("*"):
            try:
                if ref.is_file() and ref.read_text(encoding="ascii", errors="replace") in gone:
                    ref.unlink()
            except OSError:
                pass
        candidates = {os.path.basename(os.readlink(p)) for d in snapshots for p in d.rglob("*") if p.is_symlink()}
        for d in snapshots:
            shutil.rmtree(d, ignore_errors=True)
        kept = {os.path.basename(os.readlink(p)) for p in (repo / "snapshots").rglob("*") if p.is_symlink()}
        for name in candidates - kept:
            (repo / "blobs" / name).unlink(missing_ok=True)
