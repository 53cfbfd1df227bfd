"""seeder: put ML model files where an app needs them, before it starts, verified.

The Python API an app needs at start-up::

    import seeder
    problems = seeder.check("/app/models")        # fast size check against the installed record
    for model in seeder.installed("/app/models"):  # what is there: revision, commit, files, digests
        ...
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def check(models_dir: str | Path, *, fast: bool = True):
    """Problems found in ``models_dir`` (missing files, wrong sizes; digests too with ``fast=False``)."""
    from .store.verify import check as _check

    return _check(models_dir, fast=fast)


def installed(models_dir: str | Path) -> list[dict]:
    """The installed models as recorded: name, kind, repo/urls, revision, commit, files with size and sha256,
    and the directory a reader opens (``path``: ``<dir>/<name>``, or a snapshot in the hf-cache layout)."""
    from .store import Target

    out = []
    target = Target(Path(models_dir))
    for name, record in sorted(target.read_state().items()):
        entry = record.model.to_json()
        entry["installed_at"] = record.installed_at
        entry["path"] = str(target.path_of(record.model))
        entry["files"] = [{**f, "sha256": record.sha256(f["path"])} for f in entry["files"]]
        out.append(entry)
    return out
