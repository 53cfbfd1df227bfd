"""Check a target's files against a lock: sizes (fast) or full digests, hashed in parallel.

This is what ``seeder verify`` and an app's start-up check (:func:`seeder.check`) run: it imports
no download engine, hub client or HTTP library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import LockError
from ..integrity import ContentMismatch, hash_file
from ..spec import lock as lockfile
from ..spec.lock import Lock, LockedFile, LockedModel
from .state import State
from .target import Target


@dataclass(frozen=True)
class Problem:
    model: str
    path: str | None
    kind: str  # not-installed, stale, missing, size, checksum, stray, lock
    detail: str

    def __str__(self) -> str:
        where = f"{self.model}/{self.path}" if self.path else self.model
        return f"{where}: {self.detail}"


def installed_lock(state: State) -> Lock:
    """The lock as recorded in a target's state: what an app container can check against."""
    return Lock(models=tuple(record.model for record in state.values()))


def _check_file(target: Target, model: LockedModel, file: LockedFile, fast: bool) -> Problem | None:
    path = target.path_of(model, file.path)
    try:
        size = path.stat().st_size
    except OSError:
        return Problem(model.name, file.path, "missing", "missing")
    if size != file.size:
        return Problem(model.name, file.path, "size", f"size {size}, expected {file.size}")
    if fast:
        return None
    try:
        hash_file(path, file).check()
    except ContentMismatch as e:
        return Problem(model.name, file.path, "checksum", str(e))
    except OSError as e:
        return Problem(model.name, file.path, "missing", f"unreadable: {e.strerror}")
    return None


def _strays(target: Target, model: LockedModel, lock: Lock, managed: bool) -> list[Problem]:
    """Files in the model's directory that its lock does not list: someone wrote there."""
    root = target.path_of(model)
    # Models of one repo at one commit share an hf-cache snapshot: each one's files are no stray of another's.
    wanted = {f.path for m in lock.models if target.path_of(m) == root for f in m.files}
    found = (str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())
    detail = "not in the lock: written there after install" if managed else "not in the lock"
    return [Problem(model.name, path, "stray", detail) for path in sorted(found) if path not in wanted]


def verify(target: Target, lock: Lock, *, fast: bool = False, jobs: int | None = None,
           state: State | None = None) -> list[Problem]:
    """Problems of ``lock``'s models in ``target``; ``state``: the target's, when the caller has read it."""
    state = target.read_state() if state is None else state
    managed = target.managed()
    problems: list[Problem] = []
    checks: list[tuple[LockedModel, LockedFile]] = []
    for model in lock.models:
        if managed:
            record = state.get(model.name)
            if record is None or not target.path_of(record.model).exists():
                problems.append(Problem(model.name, None, "not-installed", "not installed (run seeder)"))
                continue
            if record.version != model.version:
                problems.append(Problem(model.name, None, "stale",
                                        "installed version differs from the lock (run seeder)"))
        elif not target.path_of(model).is_dir():
            # No state to ask: the model's directory is the only sign it was put there at all.
            problems.append(Problem(model.name, None, "not-installed", f"no directory {target.path_of(model)}"))
            continue
        checks.extend((model, f) for f in model.files)
        problems.extend(_strays(target, model, lock, managed))
    # Hashing releases the GIL, so threads use every core; big files first keeps them all busy. A fast
    # check only stats: no pool (and no import of one) for an app's start-up check.
    checks.sort(key=lambda mf: -mf[1].size)
    if fast:
        results = [_check_file(target, m, f, fast) for m, f in checks]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=jobs or min(8, os.cpu_count() or 1)) as pool:
            results = list(pool.map(lambda mf: _check_file(target, mf[0], mf[1], fast), checks))
    problems.extend(p for p in results if p is not None)
    return problems


def lock_at(path: str | Path) -> Lock:
    """The lock at ``path``, for checking a directory against it; a missing one is an error here."""
    lock = lockfile.read(Path(path))
    if lock is None:
        raise LockError(f"{path}: no such lock")
    return lock


def check(models_dir: str | Path, *, fast: bool = True, lock: str | Path | None = None) -> list[Problem]:
    """Check an installed target against its own record (for apps at start-up), or, given ``lock`` (a
    models.lock's path), against that lock: what a directory seeder did not write (an image volume) needs.
    Empty list: all good."""
    target = Target(Path(models_dir))
    state = target.read_state()
    if lock is None:
        expected = installed_lock(state)
        if not expected.models:
            return [Problem("*", None, "not-installed", f"no models installed in {models_dir} (run seeder)")]
    else:
        try:
            expected = lock_at(lock)
        except LockError as e:  # an app reports problems; it has no exit code to give
            return [Problem("*", None, "lock", str(e))]
        if not expected.models:
            return [Problem("*", None, "lock", f"{lock} lists no models")]
    return verify(target, expected, fast=fast, state=state)
