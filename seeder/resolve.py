"""The lock a run works from: the one it is given (beside the manifest) or the target's own, then
re-resolved where it does not match the manifest.

Resolving goes through :mod:`seeder.sources` (imported only when something is stale, so a run
from an up-to-date lock never loads the hub client). Where the manifest's directory is read-only
(a manifest baked into an image, a ConfigMap), a lock seeder resolves (``refresh``, or a plain run
filling in what the given lock lacks) is kept in the target instead, with the digest of the given
lock it was made from. Later runs given that same lock keep the target's own, newer one: a refresh
lasts. A run given another lock (the image was rebuilt with a new committed lock) takes that one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import log
from .errors import LockError, RemoteError, StorageError
from .settings import Network
from .spec import lock as lockfile
from .spec.lock import Lock, LockedModel
from .spec.manifest import Manifest
from .store import Target
from .store.fs import write_atomic
from .store.target import lock_digest

BASED_ON = "based_on"
"""The kept lock's record of the given lock it was made from: its path, digest (None: there was none),
which command made it and when. A lock kept without one (by import) is used only when none is given."""


@dataclass(frozen=True)
class Kept:
    """A lock kept in the target's state."""

    lock: Lock
    data: dict
    """The file as read, so that it is deleted only if no other run has replaced it meanwhile."""

    @property
    def base(self) -> dict | None:
        base = self.data.get(BASED_ON)
        return base if isinstance(base, dict) else None

    def made(self) -> str:
        base = self.base or {}
        return f"`seeder {base.get('by', 'refresh')}` kept it in the target on {base.get('at', '?')}"


@dataclass(frozen=True)
class Choice:
    """The lock a run starts from, and why."""

    lock: Lock | None
    path: Path
    """Where ``lock`` is kept (where it would be, when there is none)."""
    why: str
    given: Lock | None
    given_path: Path
    """The lock beside the manifest, and its path."""
    kept: Kept | None
    own: bool = False
    """``lock`` is the target's own: made from ``given`` as it still is, or kept where none is given."""
    superseded: bool = False
    """The target's own lock was made from another given lock, so it no longer counts."""


def read_kept(target: Target) -> Kept | None:
    data = lockfile.read_json(target.lock_copy)
    if data is None:
        return None
    return Kept(lockfile.parse(data, target.lock_copy), data)


def choose_lock(manifest: Manifest, target: Target, *, committed: bool = False) -> Choice:
    """The given lock, unless the target keeps its own made from exactly that lock (by a refresh, say).

    ``committed`` (``--locked``): the given lock must be there and current; the target's own counts only
    when it was made from that lock and is current too, and one kept where none was given never does.
    """
    path = lockfile.lock_path_for(manifest.path)
    given = lockfile.read(path)
    try:
        kept = read_kept(target)
    except LockError as e:
        if given is None:
            raise
        log.warning("the lock kept in the target is unreadable: ignored, the given lock is used", error=str(e))
        kept = None
    digest = lock_digest(given) if given is not None else None

    def pick(lock: Lock | None, why: str, **flags: bool) -> Choice:
        where = target.lock_copy if flags.get("own") else path
        return Choice(lock, where, why, given, path, kept, **flags)

    if kept is not None and kept.base is not None:
        if kept.base.get("sha256") == digest:
            if not committed or (given is not None and given.matches(manifest) and kept.lock.matches(manifest)):
                return pick(kept.lock, f"the target's own lock: {kept.made()}, made from {path} as it still is; "
                            "runs keep it until that lock changes", own=True)
        elif digest is not None and digest == lock_digest(kept.lock):
            return pick(given, f"{path} now is the lock the target runs on ({kept.made()}; it has been "
                        "committed)", superseded=True)
        elif given is not None:
            return pick(given, f"{path} changed since {kept.made()} from an earlier one: the given lock wins over "
                        "the target's own", superseded=True)
        else:
            return pick(None, f"{path} went since {kept.made()} from it: the target's own lock no longer counts",
                        superseded=True)
    if given is not None:
        return pick(given, "the lock beside the manifest")
    if kept is not None and not committed:
        return pick(kept.lock, f"no lock at {path}: the one kept in the target", own=True)
    return pick(None, f"no lock at {path} yet")


def obtain_lock(manifest: Manifest, target: Target, *, locked: bool, net: Network | None,
                committed: bool = False, retire: bool = False) -> Lock:
    """The lock to seed from (:func:`choose_lock`), re-resolved where it does not match the manifest
    (and written back). ``retire``: a run about to write the target drops a superseded lock of its own."""
    choice = choose_lock(manifest, target, committed=committed)
    log.info("using lock", path=str(choice.path), why=choice.why)
    if choice.superseded and retire:
        drop_kept(target, choice.kept)
    current = choice.lock
    if current is not None and current.matches(manifest):
        return current
    why = not_current(choice.path, current, manifest)
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
    save_lock(new, lockfile.lock_path_for(manifest.path), target)
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


def save_lock(lock: Lock, path: Path, target: Target | None, by: str = "seed") -> Path:
    """Write ``lock`` at ``path`` (beside the manifest); where that is read-only, keep it in ``target``
    with the digest of the lock at ``path`` it was made from. ``by``: the command, for the record."""
    try:
        write_atomic(path, lock.dumps())
        log.info("lock written", path=str(path))
        if target is not None:
            drop_kept(target)  # the given lock is the newest now
        return path
    except StorageError as e:
        if target is None:
            raise
        given = lockfile.read(path)
        base = {"lock": str(path), "sha256": lock_digest(given) if given is not None else None, "by": by,
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        target.ensure()
        write_atomic(target.lock_copy, json.dumps({**lock.to_json(), BASED_ON: base}, indent=2) + "\n")
        if by == "refresh":
            log.warning(f"refreshed lock kept in the target: {path} is read-only; later runs keep it until {path} "
                        "changes (`seeder status` says how to commit it)", error=str(e), path=str(target.lock_copy))
        else:
            log.warning("lock kept in the target's state: the manifest's directory is not writable; run `seeder "
                        "lock` where it is and commit models.lock", error=str(e), path=str(target.lock_copy))
        return target.lock_copy


def drop_kept(target: Target, kept: Kept | None = None) -> None:
    """Delete the target's own lock (only if it still is ``kept``, when given: a refresh may have replaced it)."""
    try:
        if kept is None or lockfile.read_json(target.lock_copy) == kept.data:
            target.lock_copy.unlink(missing_ok=True)
    except (OSError, LockError):  # a lock left behind is harmless: it no longer matches what runs are given
        pass
