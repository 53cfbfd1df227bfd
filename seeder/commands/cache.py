"""``seeder cache du|prune``: how much the download cache holds; delete what no lock references."""

from __future__ import annotations

from pathlib import Path

from .. import log
from ..errors import OK, UsageError
from ..fmt import human_bytes
from ..store.housekeeping import du, prune, referenced
from . import cache_of


def run(args, cfg, net) -> int:
    cache = cache_of(cfg)
    if cache is None:
        raise UsageError("seeder cache needs --cache DIR (or SEEDER_CACHE)")
    if args.action == "du":
        usage = du(cache)
        print(f"{usage.blobs} files, {human_bytes(usage.bytes)} in {cache.root}"
              + (f"; {usage.partials} partial downloads, {human_bytes(usage.partial_bytes)}" if usage.partials else ""))
        return OK
    keep = referenced([Path(p) for p in (cfg.manifest, *args.keep)])
    removed = prune(cache, keep, args.keep_days)
    log.info("cache pruned", files=removed.blobs + removed.partials, bytes=removed.bytes + removed.partial_bytes,
             kept=len(keep))
    return OK
