"""seeder: put ML model files where an app needs them, before it starts, verified.

The Python API an app needs at start-up::

    import seeder
    problems = seeder.check("/app/models")        # fast size check against the installed record
    for model in seeder.installed("/app/models"):  # what is there: revision, commit, files, digests
        ...

A directory seeder did not write (an image volume of a pushed model) has no record: pass the lock,
``seeder.check(dir, lock="/etc/seeder/models.lock")`` and ``seeder.installed(dir, lock=...)``.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def check(models_dir: str | Path, *, fast: bool = True, lock: str | Path | None = None):
    """Problems found in ``models_dir`` (missing files, wrong sizes; digests too with ``fast=False``), against
    what seeder recorded there, or against the models.lock at ``lock`` (for a directory seeder did not write,
    such as an image volume: ``<models_dir>/<name>/<path>`` for each locked file)."""
    from .store.verify import check as _check

    return _check(models_dir, fast=fast, lock=lock)


def installed(models_dir: str | Path, lock: str | Path | None = None) -> list[dict]:
    """The installed models as recorded: name, kind, repo/urls, revision, commit, files with size and sha256,
    and the directory a reader opens (``path``: ``<dir>/<name>``, or a snapshot in the hf-cache layout).
    Given ``lock``, the models that lock lists, where they are expected (``installed_at`` is None)."""
    from .store import Target

    target = Target(Path(models_dir))
    if lock is not None:
        from .store.verify import lock_at

        return [_entry(target, m, None, lambda f: f.get("sha256")) for m in lock_at(lock).models]
    return [_entry(target, record.model, record.installed_at, lambda f, r=record: r.sha256(f["path"]))
            for _, record in sorted(target.read_state().items())]


def _entry(target, model, installed_at: str | None, sha256_of) -> dict:
    entry = model.to_json()
    entry["installed_at"] = installed_at
    entry["path"] = str(target.path_of(model))
    entry["files"] = [{**f, "sha256": sha256_of(f)} for f in entry["files"]]
    return entry
