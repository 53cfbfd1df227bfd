"""``seeder [seed]``: fill the target from the manifest and its lock; an intact target costs no request.
``--prune`` then removes what the lock no longer lists, from the lock alone."""

from __future__ import annotations

import time

from .. import log
from ..errors import OK
from ..install import Summary, install
from ..install.prune import prune
from ..resolve import obtain_lock
from . import caches_of, check_caches, load_manifest, target_of


def run(args, cfg, net) -> int:
    started = time.monotonic()
    check_caches(cfg)
    target = target_of(cfg)
    manifest = load_manifest(cfg)
    if not manifest.models:
        log.warning("the manifest lists no models: nothing to do", path=str(manifest.path))
    lock = obtain_lock(manifest, target, locked=cfg.locked, net=net, committed=cfg.locked, retire=True)
    if target.layout.name == manifest.layout and target.is_complete(lock):  # read once, when Target was made
        summary = Summary.warm(lock)
    else:
        summary = install(lock, target, caches=caches_of(cfg), net=net, parts=cfg.parts(), jobs=cfg.jobs,
                          grace=cfg.grace, unless_complete=True, layout=manifest.layout)
    if args.prune:
        prune(lock, target, cfg.grace)
    summary.seconds = time.monotonic() - started
    summary.emit()
    return OK
