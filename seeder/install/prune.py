"""``seeder seed --prune``: drop from a target what its lock no longer lists, from the lock alone.

A plain ``seed`` installs the lock and leaves the rest: a model the manifest dropped stays (``refresh``
removes it, but re-resolves every model against the hub to do so), and a replaced version whose delete
failed (on NFS a file a reader still holds open is renamed to ``.nfs…`` and its directory will not go)
stays behind a warm target, which never looks again. Pruning asks no network and no cache: what stays
is exactly the lock's models at the lock's versions.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .. import log
from ..spec.lock import Lock
from ..store import Target


def leftovers(lock: Lock, target: Target) -> tuple[list[str], list[tuple[str, Path]]]:
    """(models the target holds that ``lock`` does not list, (name, directory) of older versions of the
    models it lists)."""
    listed = {m.name for m in lock.models}
    # A run killed before it recorded its first install of a model leaves a version the state never names.
    try:
        on_disk = {d.name for d in target.versions.iterdir() if d.is_dir()}
    except (FileNotFoundError, NotADirectoryError):
        on_disk = set()
    unlisted = sorted((set(target.read_state()) | on_disk) - listed)
    listed_models = list(lock.models)
    return unlisted, [(m.name, d) for m in lock.models for d in target.old_versions(m, listed_models)]


def prune(lock: Lock, target: Target, grace: float) -> None:
    """Remove the models ``lock`` does not list and every version of a listed model but the lock's.

    Called once the target holds ``lock`` (a failed install raises before), so a listed model's current
    version is the lock's. Older versions wait ``grace`` seconds for readers that resolved the old link.
    """
    if leftovers(lock, target) == ([], []):  # a tidy target costs a listing, not the flock
        return
    with target.exclusive():
        if not target.is_complete(lock):
            # Another seeder installed another lock since ours (a second Job, a newer one): what ours does not
            # list may be what the link now points at.
            log.warning("not pruning: the target no longer holds this lock", target=str(target.root))
            return
        unlisted, old = leftovers(lock, target)  # again: another seeder may have changed it meanwhile
        if unlisted:
            state = target.read_state()
            for name in unlisted:
                if name in state:
                    target.remove_model(state[name].model, list(lock.models))
                    del state[name]
                else:  # never recorded, so never published: nothing at <target>/<name> is ours to unlink
                    shutil.rmtree(target.versions / name, ignore_errors=True)
                log.info("removed", model=name)
            target.write_state(state)
        if not old:
            return
        models = sorted({name for name, _ in old})
        if grace > 0:
            log.info("keeping replaced versions for readers", models=models, seconds=grace)
            time.sleep(grace)
        for model in lock.models:
            if model.name in models:
                target.prune_versions(model, list(lock.models))
        if still := [str(d) for _, d in old if d.exists()]:
            log.warning("could not delete old versions; the next --prune tries again", paths=still)
        log.info("pruned old versions", models=models, versions=len(old) - len(still))
