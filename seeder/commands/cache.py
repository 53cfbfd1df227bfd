"""``seeder cache du|prune|push``: what the caches hold, delete what no lock references, and fill an
``s3://`` cache from a target (the air-gapped path: import a bundle on one machine, push it to the
cluster's bucket, and every node then seeds ``--offline`` from it)."""

from __future__ import annotations

import time
from pathlib import Path

from .. import log
from ..errors import OK, IntegrityError, RemoteError, UsageError
from ..fmt import count, human_bytes
from ..integrity import ContentMismatch, hash_file
from ..store import Cache, Target
from ..store.housekeeping import du, prune, referenced
from ..store.s3 import CacheUnavailable, S3Cache, blob_key
from ..store.verify import installed_lock
from . import caches_of, target_of


def run(args, cfg, net) -> int:
    caches = caches_of(cfg)
    if not caches:
        raise UsageError("seeder cache needs --cache DIR or s3://BUCKET[/PREFIX] (or SEEDER_CACHE)")
    if args.action == "push" and not any(isinstance(c, S3Cache) for c in caches):
        raise UsageError("seeder cache push needs an s3:// cache (--cache s3://BUCKET[/PREFIX])")
    try:
        for cache in caches:
            if not isinstance(cache, S3Cache) and not cache.writable:
                log.info("skipped: read as a cache, never changed", cache=str(cache.root))
            elif args.action == "push":
                _push(cache, target_of(cfg))
            elif args.action == "du":
                _du(cache)
            else:
                _prune(cache, referenced([Path(p) for p in (cfg.manifest, *args.keep)]), args.keep_days)
    except CacheUnavailable as e:
        raise RemoteError(str(e)) from None
    return OK


def _du(cache: Cache | S3Cache) -> None:
    if isinstance(cache, Cache):
        usage = du(cache)
        print(f"{count(usage.blobs, 'file')}, {human_bytes(usage.bytes)} in {cache.root}"
              + (f"; {count(usage.partials, 'partial download')}, {human_bytes(usage.partial_bytes)}"
                 if usage.partials else ""))
        return
    sizes = [size for _, size, _ in cache.listing()]
    print(f"{count(len(sizes), 'file')}, {human_bytes(sum(sizes))} in {cache.url}")


def _prune(cache: Cache | S3Cache, keep: set[str], keep_days: float | None) -> None:
    if isinstance(cache, Cache):
        removed = prune(cache, keep, keep_days)
        log.info("cache pruned", cache=str(cache.root), files=removed.blobs + removed.partials,
                 bytes=removed.bytes + removed.partial_bytes, kept=len(keep))
        return
    keys = {blob_key(d) for d in keep}
    cutoff = time.time() - keep_days * 86400 if keep_days is not None else None
    files = size_gone = 0
    for key, size, modified in list(cache.listing()):
        if key in keys or (cutoff is not None and modified > cutoff):
            continue
        cache.delete_key(key)
        files, size_gone = files + 1, size_gone + size
    log.info("cache pruned", cache=cache.url, files=files, bytes=size_gone, kept=len(keep))


def _push(cache: Cache | S3Cache, target: Target) -> None:
    if not isinstance(cache, S3Cache):
        log.info("not an s3:// cache; nothing to push there", cache=str(cache.root))
        return
    state = target.read_state()
    lock = installed_lock(state)
    if not lock.models:
        raise UsageError(f"nothing installed in {target.root} to push")
    pushed = present = 0
    for model in lock.models:
        for file in model.files:
            if cache.exists(file):
                present += 1
                continue
            path = target.path_of(model, file.path)
            try:
                sha256 = hash_file(path, file).check()  # only verified bytes go into a shared cache
            except (ContentMismatch, OSError) as e:
                raise IntegrityError(f"{model.name}/{file.path} does not match its lock ({e}); run seeder") from None
            cache.upload(path, file, sha256)
            pushed += 1
            log.info("pushed", cache=cache.url, model=model.name, file=file.path, bytes=file.size)
    log.info("cache pushed", cache=cache.url, files=pushed, already_there=present)
