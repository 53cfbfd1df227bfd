"""The lock a run works from: the one beside the manifest when it matches, else re-resolved.

Resolving goes through :mod:`seeder.sources` (imported only when something is stale, so a run
from an up-to-date lock never loads the hub client). Where the manifest's directory is read-only
(a config mount), the lock is kept in the target's state instead, with a warning.
"""

from __future__ import annotations

from pathlib import Path

from . import log
from .errors import LockError, RemoteError, StorageError
from .settings import Network
from .spec import lock as lockfile
from .spec.lock import Lock, LockedModel
from .spec.manifest import Manifest
from .store import Target
from .store.fs import write_atomic


def current_lock(manifest: Manifest, target: Target) -> Lock | None:
    """The lock beside the manifest or, where there is none, the one kept in the target's state."""
    current = lockfile.read(lockfile.lock_path_for(manifest.path))
    return current if current is not None else lockfile.read(target.lock_copy)


def obtain_lock(manifest: Manifest, target: Target, *, locked: bool, net: Network | None,
                committed: bool = False) -> Lock:
    """The lock to seed from: the manifest's own when it matches, else re-resolved (and written back).

    ``committed`` (``--locked``): only the lock beside the manifest counts; one kept in the target's
    state was resolved by some earlier run, not committed by anyone.
    """
    path = lockfile.lock_path_for(manifest.path)
    current = lockfile.read(path) if committed else current_lock(manifest, target)
    if current is not None and current.matches(manifest):
        return current
    why = not_current(path, current, manifest)
    current = current or Lock(models=())
    stale = current.stale_models(manifest)
    if locked:
        raise LockError(f"{why}; run `seeder lock` and commit the result")
    fresh = {}
    if stale:  # only dropping models needs no hub
        if net is None or net.offline:
            raise RemoteError(f"offline: {why} and resolving needs the hub")
        fresh = resolve(manifest, stale, net)
    new = current.updated(manifest, fresh)
    save_lock(new, path, target)
    return new


def not_current(path: Path, lock: Lock | None, manifest: Manifest) -> str:
    """Why ``lock`` (read from ``path``; None: there is none) does not cover ``manifest``."""
    if lock is None:
        return f"{path} is missing"
    if not lock.models:
        return f"{path} is empty"
    return f"{path} is out of date for {', '.join(lock.stale_models(manifest)) or 'removed models'}"


def resolve(manifest: Manifest, names: list[str], net: Network) -> dict[str, LockedModel]:
    from .fetch.transport import Client
    from .sources import resolve as resolve_sources

    return resolve_sources(manifest, names, Client(net))


def save_lock(lock: Lock, path: Path, target: Target | None) -> Path:
    try:
        write_atomic(path, lock.dumps())
        log.info("lock written", path=str(path))
        return path
    except StorageError as e:
        if target is None:
            raise
        target.ensure()
        write_atomic(target.lock_copy, lock.dumps())
        log.warning("lock kept in the target's state: the manifest's directory is not writable; "
                    "run `seeder lock` where it is and commit models.lock", error=str(e), path=str(target.lock_copy))
        return target.lock_copy
