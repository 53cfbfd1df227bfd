"""``seeder lock``: resolve new or changed models (every model with ``--upgrade``) into models.lock;
``--from-target``: take the lock the target runs on (a refresh kept in it) instead, resolving nothing."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import log
from ..errors import OK, LockError, StorageError, UsageError
from ..resolve import choose_lock, drop_kept, not_current, resolve, save_lock
from ..spec import lock as lockfile
from ..spec.lock import Lock
from ..spec.manifest import Manifest
from ..store.fs import write_atomic
from . import load_manifest, target_of


def run(args, cfg, net) -> int:
    manifest = load_manifest(cfg)
    if args.output is not None and not args.from_target:
        raise UsageError("--output goes with --from-target; seeder lock writes models.lock beside the manifest")
    if args.from_target:
        if args.upgrade or cfg.locked:
            raise UsageError("--from-target takes the target's lock as it is: without --upgrade or --locked")
        return _from_target(manifest, cfg, args.output)
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


def _from_target(manifest: Manifest, cfg, output: str | None) -> int:
    """Write the target's own lock (the one its runs use) where it can be committed: a refresh made permanent."""
    target = target_of(cfg)
    choice = choose_lock(manifest, target)
    if not choice.own:
        raise UsageError(f"{target.root} runs on {choice.path}, not on a lock of its own: nothing to take "
                         f"({choice.why})")
    if not choice.lock.matches(manifest):
        raise LockError(f"{not_current(choice.path, choice.lock, manifest)}; run `seeder` first")
    if output == "-":
        sys.stdout.write(choice.lock.dumps())
        return OK
    path = Path(output) if output else choice.given_path
    try:
        write_atomic(path, choice.lock.dumps())
    except StorageError as e:
        raise StorageError(f"{e} (--output - prints the lock instead)") from None
    log.info("lock written from the target", path=str(path), source=str(choice.path))
    if path == choice.given_path:
        drop_kept(target, choice.kept)  # the given lock is the target's now
    return OK
