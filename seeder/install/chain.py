"""Where a file's bytes come from when the target lacks them: local caches, remote caches, the origin.

Looked up in the order given (a node-local directory first, then a shared bucket, then the origin).
The first local cache is where bytes land (``blobs/``, partials in ``tmp/``); without one they go
straight into the target. A cached blob is hashed on its way into a target unless this run just
verified it; a remote blob is read through the Range engine and verified like any download, and a
wrong one is reported, skipped and replaced. A file fetched from the origin is uploaded to every
writable remote cache; with a shared bucket, one node fetches it (single flight, see
:mod:`seeder.store.s3`) while the others wait for it to appear there.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .. import failpoints, log
from ..errors import IntegrityError, RemoteError
from ..integrity import ContentMismatch
from ..settings import Network, Parts
from ..spec.lock import LockedFile, LockedModel
from ..store import Cache
from ..store.seeded import Seeded
from ..store.fs import regular_or_absent, storage_error
from ..store.s3 import CacheUnavailable, Lease, NoConditionalWrites, S3Cache

LEASE_WAIT_MAX = 3600.0  # seconds a node waits for another one's download before fetching itself
_FOLLOWED = object()


class Chain:
    def __init__(self, owner, caches: list[Cache | Seeded | S3Cache], net: Network | None, parts: Parts):
        self.owner = owner  # the Installer: links, counts and sha256s go through it
        self.locals = [c for c in caches if isinstance(c, (Cache, Seeded))]
        self.remotes = [c for c in caches if isinstance(c, S3Cache)]
        self.primary = next((c for c in caches if isinstance(c, Cache)), None)  # a seeded target is never written
        self.net = net or Network(offline=True)
        self.parts = parts
        self.single_flight = True
        self._clients: dict[Network, object] = {}  # one per set of settings: origins that share them share connections
        self._placed: dict[str, Path] = {}  # digest -> where this run put it (no local cache)
        self._mutex = threading.Lock()

    # -- what is where --

    def local_has(self, file: LockedFile) -> bool:
        return self.local_source(file) is not None

    def local_source(self, file: LockedFile) -> Cache | Seeded | None:
        return next((c for c in self.locals if c.has(file)), None)

    def remote_has(self, file: LockedFile) -> bool:
        for cache in self._usable():
            try:
                if cache.exists(file):
                    return True
            except CacheUnavailable as e:
                cache.disable(e)
        return False

    def part_path(self, file: LockedFile) -> Path:
        from ..fetch.partial import partial_path

        return partial_path(self.primary.tmp if self.primary else self.owner.target.tmp, file)

    def _usable(self) -> list[S3Cache]:
        return [c for c in self.remotes if c.usable]

    # -- one file --

    def obtain(self, model: LockedModel, file: LockedFile, final: Path, progress) -> None:
        """``file``'s verified bytes at ``final``, from the first place that has them."""
        for cache in self.locals:
            if cache.has(file) and self._link_cached(model, file, cache, final, trusted=False):
                return
        if self.primary is None:
            if (done := self._placed.get(file.digest)) is not None:  # two models list the same bytes
                self.owner.record_sha256(model, file, self.owner.link_or_copy(done, final, file))
                self.owner.count(reused=file.size)
                return
            self._fill(model, file, final, progress)
            self._placed[file.digest] = final
            return
        with self.primary.exclusive(file.digest):
            filled = not self.primary.has(file)  # else another process on this host filled it meanwhile
            if filled:
                self._fill(model, file, self.primary.blob(file), progress)
        if not self._link_cached(model, file, self.primary, final, trusted=filled):
            with self.primary.exclusive(file.digest):
                self._fill(model, file, self.primary.blob(file), progress)
            if not self._link_cached(model, file, self.primary, final, trusted=True):
                raise IntegrityError(f"{model.name}/{file.path}: the cached copy changed while it was installed")

    def _link_cached(self, model, file, cache: Cache | Seeded, final: Path, trusted: bool) -> bool:
        # A blob this run did not just verify is hashed on its way in: a cache is shared, and its name
        # alone proves nothing about its bytes.
        try:
            # Another target's files are copied: a hardlink would let a write to either change both.
            self.owner.record_sha256(model, file, self.owner.link_or_copy(cache.blob(file), final, file, trusted,
                                                                          link=not isinstance(cache, Seeded)))
        except ContentMismatch as e:
            log.warning("cached copy damaged, downloading again", model=model.name, file=file.path, error=str(e),
                        cache=str(cache.root))
            cache.discard(file)
            return False
        if not trusted:
            self.owner.count(reused=file.size)
        return True

    def _fill(self, model: LockedModel, file: LockedFile, dest: Path, progress) -> None:
        """Put verified bytes at ``dest``: from a remote cache, else from the origin."""
        bad: list[S3Cache] = []
        for cache in self._usable():
            try:
                if cache.exists(file) and self._from_remote(cache, model, file, dest, progress, bad):
                    return
            except CacheUnavailable as e:
                cache.disable(e)
        if self.net.offline:
            raise RemoteError(f"offline and not in the target or any cache: {model.name}/{file.path}")
        self._from_origin(model, file, dest, progress, bad)

    def _from_remote(self, cache: S3Cache, model, file, dest: Path, progress, bad: list[S3Cache]) -> bool:
        try:
            result = self._download(self._client_for(cache), [cache.presigned(file)], model, file, dest, progress,
                                    tries=1)
        except IntegrityError as e:
            log.warning("remote cache holds wrong bytes; trying the next source", cache=cache.url, model=model.name,
                        file=file.path, error=str(e))
            bad.append(cache)
            return False
        except RemoteError as e:
            cache.disable(e)
            return False
        self.owner.count(from_cache=result.fetched, reused=file.size - result.fetched)
        log.info("from remote cache", cache=cache.url, model=model.name, file=file.path, bytes=result.fetched)
        return True

    def _from_origin(self, model, file, dest: Path, progress, bad: list[S3Cache]) -> None:
        writable = [c for c in self._usable() if c.write]
        lease = None
        if writable and self.single_flight:
            lease = self._lead_or_follow(writable[0], model, file, dest, progress, bad)
            if lease is _FOLLOWED:
                return
        try:
            with self._renewing(writable[0] if writable else None, lease):
                from ..sources import file_urls

                log.info("downloading", model=model.name, file=file.path, bytes=file.size)
                result = self._download(self._origin_client(model), file_urls(model, file, self.net), model, file,
                                        dest, progress)
                self.owner.count(downloaded=result.fetched, reused=file.size - result.fetched)
                log.info("downloaded", model=model.name, file=file.path, bytes=result.fetched)
                self._upload(writable, file, dest, result.sha256, bad)
        finally:
            if lease:
                writable[0].release(lease)

    def _download(self, client, urls: list[str], model, file, dest: Path, progress, tries: int = 2):
        from ..fetch.download import download

        part = self.part_path(file)
        regular_or_absent(part)
        result = download(client, urls, part, file, progress.file(model.name, file.path, file.size), model.name,
                          tries)
        failpoints.hit("downloaded")
        try:
            os.replace(part, dest)
        except OSError as e:
            raise storage_error(e, "install", dest) from None
        self.owner.record_sha256(model, file, result.sha256)
        return result

    def _upload(self, writable: list[S3Cache], file: LockedFile, path: Path, sha256: str, bad: list[S3Cache]) -> None:
        for cache in writable:
            try:
                if cache in bad or not cache.exists(file):
                    cache.upload(path, file, sha256)
                    log.info("uploaded to remote cache", cache=cache.url, file=file.path, bytes=file.size)
            except CacheUnavailable as e:
                cache.read_only(e)

    def _client_for(self, cache: S3Cache):
        """The HTTP client for a bucket's presigned URLs: no hub token, and plain http allowed to an
        endpoint the user configured."""
        from ..sources.s3 import network

        return self._client(network(self.net))

    def _origin_client(self, model: LockedModel):
        from ..sources import network

        return self._client(network(model, self.net))

    def _client(self, net: Network):
        from ..fetch.transport import Client

        with self._mutex:
            if net not in self._clients:
                self._clients[net] = Client(net, self.parts)
            return self._clients[net]

    # -- single flight --

    def _lead_or_follow(self, cache: S3Cache, model, file, dest: Path, progress, bad: list[S3Cache]):
        """A lease to fetch ``file`` from the origin, _FOLLOWED when another node's upload was used
        instead, or None (no single flight: fetch anyway)."""
        started = time.monotonic()
        seen, seen_at, said = None, started, 0.0
        while True:
            try:
                lease = cache.acquire(file, stale=seen if seen and time.monotonic() - seen_at > cache.lease_seconds
                                      else None)
            except NoConditionalWrites as e:
                self.single_flight = False
                log.warning("the bucket has no conditional writes: every node fetches from the origin",
                            cache=cache.url, error=str(e))
                return None
            except CacheUnavailable as e:
                cache.disable(e)
                return None
            if lease is None and not cache.write:  # no permission to lead: fetch without waiting
                return None
            if lease is not None:
                if seen:
                    log.warning("took over an expired lease", cache=cache.url, model=model.name, file=file.path)
                try:
                    # The holder before us may have finished between our last look and our lease.
                    there = cache.exists(file)
                except CacheUnavailable as e:
                    cache.disable(e)
                    there = False
                if not there:
                    return lease
                cache.release(lease)
                return _FOLLOWED if self._from_remote(cache, model, file, dest, progress, bad) else None
            now = time.monotonic()
            if now - said >= 10:
                log.info("waiting for another node to fetch", cache=cache.url, model=model.name, file=file.path,
                         waited=round(now - started))
                said = now
            if now - started > LEASE_WAIT_MAX:
                log.warning("gave up waiting for another node; fetching", model=model.name, file=file.path)
                return None
            time.sleep(min(1.0, cache.lease_seconds / 5))
            try:
                if cache.exists(file):
                    return _FOLLOWED if self._from_remote(cache, model, file, dest, progress, bad) else None
                etag = cache.lease_etag(file)
            except CacheUnavailable as e:
                cache.disable(e)
                return None
            if etag != seen:
                seen, seen_at = etag, time.monotonic()

    @contextmanager
    def _renewing(self, cache: S3Cache | None, lease: Lease | None):
        if lease is None:
            yield
            return
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(cache.lease_seconds / 3):
                if not cache.renew(lease):
                    log.warning("lost the lease; another node may fetch too", cache=cache.url)
                    return

        thread = threading.Thread(target=renew, name="seeder-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
