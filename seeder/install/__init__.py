"""Apply a lock to a target: the one install path of ``seed``, ``refresh`` and ``import``.

:func:`install` takes the target's flock, clears the completion marker, places every file (reused
from the target, or obtained through the cache chain: local caches, remote caches, the origin),
publishes each model with one rename, records the state, removes models the lock dropped (when
asked), keeps replaced versions for ``grace`` seconds, and writes the marker last. Every byte that
reaches a target was verified: downloads by :mod:`seeder.fetch`, cached blobs on their way in,
earlier installs by their stamps. ``installer`` places and publishes; ``chain`` finds the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import log
from ..settings import Network, Parts
from ..spec.lock import Lock
from ..store import Cache, Target
from ..store.fs import write_atomic
from .summary import Summary

if TYPE_CHECKING:
    from ..store.s3 import S3Cache

__all__ = ["Summary", "install"]


def install(lock: Lock, target: Target, *, caches: Sequence[Cache | S3Cache] = (), net: Network | None = None,
            parts: Parts | None = None, jobs: int = 4, grace: float = 0.0, remove_unlisted: bool = False,
            record_lock: bool = False, unless_complete: bool = False, layout: str | None = None,
            verified: dict[Path, str] | None = None) -> Summary:
    """Bring ``target`` to exactly ``lock``.

    ``caches`` are looked up in order (local directories and ``s3://`` buckets); the first writable
    local one is where downloads land. ``net`` None or offline: nothing comes from the origin, and a
    file in neither the target nor a cache is an error. ``record_lock`` keeps the lock in the target's
    state, for a target filled from a bundle. ``unless_complete``: do nothing if, once the flock is ours,
    another seeder has completed the same lock meanwhile. ``layout``: the manifest's (None: the
    target's own, for a run without a manifest). ``verified``: files the caller hashed this run (a
    bundle's staged blobs) and their sha256, linked into the target without hashing them again.
    """
    from .installer import Installer  # the download engine loads only when a target needs work

    with target.exclusive():
        if layout is not None:
            target.adopt(layout)
        if unless_complete and target.is_complete(lock):
            return Summary.warm(lock)
        for cache in caches:
            if isinstance(cache, Cache):
                cache.ensure()
        target.clear_marker()
        installer = Installer(target, list(caches), net, parts or Parts(), jobs, verified)
        errors = installer.place_all(lock)
        if remove_unlisted and not errors:
            installer.remove_unlisted(lock)
        installer.prune(grace)
        if errors:
            for e in errors[1:]:
                log.error("failed", error=str(e))
            raise errors[0]
        if record_lock:
            write_atomic(target.lock_copy, lock.dumps())
        target.write_marker(lock)
    return installer.summary
