"""``seeder lock``: resolve new or changed models (every model with ``--upgrade``) into models.lock."""

from __future__ import annotations

from .. import log
from ..errors import OK, LockError, UsageError
from ..resolve import not_current, resolve, save_lock
from ..spec import lock as lockfile
from ..spec.lock import Lock
from . import load_manifest


def run(args, cfg, net) -> int:
    manifest = load_manifest(cfg)
    if net.offline:
        raise UsageError("seeder lock needs the hub; it cannot run --offline")
    path = lockfile.lock_path_for(manifest.path)
    given = lockfile.read(path)
    current = given or Lock(models=())
    if cfg.locked:  # as `uv lock --locked`: check that the lock is current, write nothing
        if args.upgrade:
            raise UsageError("--locked checks the lock and --upgrade rewrites it: use one")
        if not current.matches(manifest):
            raise LockError(f"{not_current(path, given, manifest)}; run `seeder lock` and commit the result")
        log.info("lock is up to date", path=str(path))
        return OK
    names = [m.name for m in manifest.models] if args.upgrade else current.stale_models(manifest)
    fresh = resolve(manifest, names, net) if names else {}
    save_lock(current.updated(manifest, fresh), path, target=None)
    return OK
