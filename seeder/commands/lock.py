"""``seeder lock``: resolve new or changed models (every model with ``--upgrade``) into models.lock."""

from __future__ import annotations

from ..errors import OK, UsageError
from ..resolve import resolve, save_lock
from ..spec import lock as lockfile
from ..spec.lock import Lock
from . import load_manifest


def run(args, cfg, net) -> int:
    manifest = load_manifest(cfg)
    if net.offline:
        raise UsageError("seeder lock needs the hub; it cannot run --offline")
    path = lockfile.lock_path_for(manifest.path)
    current = lockfile.read(path) or Lock(models=())
    names = [m.name for m in manifest.models] if args.upgrade else current.stale_models(manifest)
    fresh = resolve(manifest, names, net) if names else {}
    save_lock(current.updated(manifest, fresh), path, target=None)
    return OK
