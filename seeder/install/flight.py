"""Single flight across nodes: one node fetches a file from the origin while the others wait for its upload.

The lease lives in the first writable bucket (see :mod:`seeder.store.s3` and docs/scale-out.md). A
wrong blob in the bucket goes through the same flight as a missing one: the node that takes the
lease fetches and replaces it, and the others wait for a blob with another ETag than the bad one.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .. import log
from ..spec.lock import LockedFile
from ..store.s3 import CacheBusy, CacheUnavailable, Lease, NoConditionalWrites, S3Cache

LEASE_WAIT_MAX = 3600.0  # seconds a node waits for another one's download before fetching itself
FOLLOWED = object()


class Flight:
    def __init__(self, chain):
        self.chain = chain
        self.enabled = True  # False once a bucket showed it has no conditional writes
        self._checked: set[S3Cache] = set()
        self._checking = threading.Lock()

    def bucket(self) -> S3Cache | None:
        """Where leases live: the first bucket this node may write to, has not given up on, and whose
        conditional writes were seen to work (checked once per run, before the first lease)."""
        cache = next((c for c in self.chain.remotes if c.write and c.usable), None) if self.enabled else None
        if cache is None or cache in self._checked:
            return cache
        with self._checking:  # the other files' threads wait for the one check
            while cache not in self._checked and self.enabled and cache.write and cache.circuit.wait():
                try:
                    cache.check_conditional_writes()
                    self._checked.add(cache)
                except NoConditionalWrites as e:
                    self._no_conditional_writes(cache, e)
                except CacheUnavailable as e:
                    cache.trouble(e)
        return cache if cache in self._checked and self.enabled and cache.write and cache.usable else None

    def lead_or_follow(self, cache: S3Cache, model, file: LockedFile, dest: Path, progress,
                       bad: dict[S3Cache, str]):
        """A lease to fetch ``file`` from the origin, FOLLOWED when another node's upload was used
        instead, or None (no single flight: fetch anyway)."""
        started = time.monotonic()
        seen, seen_at, said = None, started, 0.0
        while True:
            # A bucket given up on (or that refused our writes) is neither leased nor waited for.
            if not cache.write or not cache.circuit.wait():
                return None
            try:
                stale = seen if seen and time.monotonic() - seen_at > cache.lease_seconds else None
                lease = cache.acquire(file, stale=stale)
                if lease is not None:
                    return self._lead(cache, lease, model, file, dest, progress, bad)
                now = time.monotonic()
                if now - said >= 10:
                    log.info("waiting for another node to fetch", cache=cache.url, model=model.name, file=file.path,
                             waited=round(now - started))
                    said = now
                if now - started > LEASE_WAIT_MAX:
                    log.warning("gave up waiting for another node; fetching", model=model.name, file=file.path)
                    return None
                time.sleep(min(1.0, cache.lease_seconds / 5))
                etag = cache.head(file)
                if etag is not None and etag != bad.get(cache):
                    return self._follow(cache, model, file, dest, progress, bad)
                holder = cache.lease_etag(file)
            except NoConditionalWrites as e:
                self._no_conditional_writes(cache, e)
                return None
            except CacheUnavailable as e:
                cache.trouble(e)
                continue
            if holder != seen:
                seen, seen_at = holder, time.monotonic()

    def _lead(self, cache: S3Cache, lease: Lease, model, file, dest, progress, bad):
        if lease.took_over:  # a holder that released normally is no takeover, and no news to an operator
            log.warning("took over an expired lease", cache=cache.url, model=model.name, file=file.path)
        try:
            # The holder before us may have finished between our last look and our lease.
            etag = cache.head(file)
        except CacheUnavailable as e:
            cache.trouble(e)
            return lease
        if etag is None or etag == bad.get(cache):
            return lease
        cache.release(lease)
        return self._follow(cache, model, file, dest, progress, bad)

    def _follow(self, cache, model, file, dest, progress, bad):
        return FOLLOWED if self.chain.read_remote(cache, model, file, dest, progress, bad) else None

    def lease_for_upload(self, cache: S3Cache, file: LockedFile) -> tuple[bool, Lease | None]:
        """(whether to upload, the lease to release afterwards) for a node that fetched without a lease."""
        if not self.enabled:
            return True, None
        try:
            lease = cache.acquire(file)
        except NoConditionalWrites as e:
            self._no_conditional_writes(cache, e)
            return True, None
        return lease is not None, lease

    def _no_conditional_writes(self, cache: S3Cache, error: Exception) -> None:
        if self.enabled:
            self.enabled = False
            log.warning("the bucket has no conditional writes: every node fetches from the origin",
                        cache=cache.url, error=str(error))

    @contextmanager
    def renewing(self, cache: S3Cache | None, lease: Lease | None):
        if lease is None:
            yield
            return
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(cache.lease_seconds / 3):
                try:
                    if cache.renew(lease):
                        continue
                except CacheBusy as e:
                    cache.trouble(e)
                    continue  # still ours, unless the outage outlasts the lease: the next renewal tells
                log.warning("lost the lease; another node may fetch too", cache=cache.url)
                return

        thread = threading.Thread(target=renew, name="seeder-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
