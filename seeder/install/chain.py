"""Where a file's bytes come from when the target lacks them: local caches, remote caches, the origin.

Looked up in the order given (a node-local directory first, then a shared bucket, then the origin).
The first writable local cache is where bytes land (``blobs/``, partials in ``tmp/``); without one they
go straight into the target. A cached blob is hashed on its way into a target unless this run just
verified it; a remote blob is read through the Range engine and verified like any download, and a
wrong one is reported, skipped and replaced. A file fetched from the origin is uploaded to every
writable remote cache; with a shared bucket, one node fetches it (single flight, see
:mod:`seeder.store.s3`) while the others wait for it to appear there.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .. import failpoints, log
from ..errors import IntegrityError, RemoteError
from ..integrity import ContentMismatch
from ..settings import Network, Parts
from ..spec.lock import LockedFile, LockedModel
from ..store.cache import LocalCache
from ..store.fs import regular_or_absent, storage_error
from ..store.s3 import CacheBusy, CacheUnavailable, Lease, S3Cache
from .flight import FOLLOWED, Flight
from .layers import Layers


class Chain:
    def __init__(self, owner, caches: list[LocalCache | S3Cache], net: Network | None, parts: Parts):
        self.owner = owner  # the Installer: links, counts and sha256s go through it
        self.locals = [c for c in caches if not isinstance(c, S3Cache)]
        self.remotes = [c for c in caches if isinstance(c, S3Cache)]
        self.primary = next((c for c in self.locals if c.writable), None)  # a cache not ours is never written
        self.net = net or Network(offline=True)
        self.parts = parts
        self.flight = Flight(self)
        self.layers = Layers(self)
        self._clients: dict[Network, object] = {}  # one per set of settings: origins that share them share connections
        self._placed: dict[str, Path] = {}  # digest -> where this run put it (no local cache)
        self._mutex = threading.Lock()

    # -- what is where --

    def local_has(self, file: LockedFile) -> bool:
        return self.local_source(file) is not None

    def local_source(self, file: LockedFile) -> LocalCache | None:
        return next((c for c in self.locals if c.has(file)), None)

    def remote_has(self, file: LockedFile) -> bool:
        for cache in self.remotes:
            while cache.circuit.wait():
                try:
                    if cache.head(file) is not None:
                        return True
                    break
                except CacheUnavailable as e:
                    cache.trouble(e)
        return False

    def part_path(self, file: LockedFile) -> Path:
        from ..fetch.partial import partial_path

        return partial_path(self.primary.tmp if self.primary else self.owner.target.tmp, file)

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

    def _link_cached(self, model, file, cache: LocalCache, final: Path, trusted: bool) -> bool:
        # A blob this run did not just verify is hashed on its way in: a cache is shared, and its name
        # alone proves nothing about its bytes.
        try:
            # A cache not ours is copied from: a hardlink would let a write to the target change it.
            self.owner.record_sha256(model, file, self.owner.link_or_copy(cache.blob(file), final, file, trusted,
                                                                          link=cache.writable))
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
        bad: dict[S3Cache, str] = {}  # a bucket -> the ETag of the wrong blob it holds for this file
        for cache in self.remotes:
            if self.read_remote(cache, model, file, dest, progress, bad):
                return
        if self.net.offline:
            raise RemoteError(f"offline and not in the target or any cache: {model.name}/{file.path}")
        self._from_origin(model, file, dest, progress, bad)

    def read_remote(self, cache: S3Cache, model, file, dest: Path, progress, bad: dict[S3Cache, str]) -> bool:
        """Whether ``file`` came from ``cache``, waiting out an outage its circuit still waits for. A blob
        known to be wrong is not read again, and one read wrong is noted in ``bad``."""
        while cache.circuit.wait():
            try:
                etag = cache.head(file)
                if etag is None or bad.get(cache) == etag:
                    return False
                return self._from_remote(cache, model, file, dest, progress, bad, etag)
            except CacheUnavailable as e:
                cache.trouble(e)
        return False

    def _from_remote(self, cache: S3Cache, model, file, dest: Path, progress, bad: dict[S3Cache, str],
                     etag: str) -> bool:
        try:
            result = self._download(self._client_for(cache), [cache.presigned(file)], model, file, dest, progress,
                                    tries=1, sticky=False)
        except IntegrityError as e:
            log.warning("remote cache holds wrong bytes; trying the next source", cache=cache.url, model=model.name,
                        file=file.path, error=str(e))
            bad[cache] = etag
            return False
        except RemoteError as e:  # what was read stays in the partial, for the next try to resume
            raise CacheBusy(f"{cache.url}: {e}") from None
        self.owner.count(from_cache=result.fetched, reused=file.size - result.fetched)
        log.info("from remote cache", cache=cache.url, model=model.name, file=file.path, bytes=result.fetched)
        return True

    def _from_origin(self, model, file, dest: Path, progress, bad: dict[S3Cache, str]) -> None:
        leader = self.flight.bucket()
        lease = self.flight.lead_or_follow(leader, model, file, dest, progress, bad) if leader else None
        if lease is FOLLOWED:
            return
        try:
            with self.flight.renewing(leader, lease):
                from ..sources import archive, file_urls

                if (packed := archive(model, file, self.net)) is not None:
                    result = self.layers.member(model, file, packed, dest, progress)
                else:
                    log.info("downloading", model=model.name, file=file.path, bytes=file.size)
                    result = self._download(self.origin_client(model), file_urls(model, file, self.net), model,
                                            file, dest, progress)
                self.owner.count(downloaded=result.fetched, reused=max(0, file.size - result.fetched))
                log.info("downloaded", model=model.name, file=file.path, bytes=result.fetched)
                self._upload(model, file, dest, result.sha256, bad, lease and (leader, lease))
        finally:
            if lease:
                leader.release(lease)

    def _download(self, client, urls: list[str], model, file, dest: Path, progress, tries: int = 2,
                  sticky: bool = True):
        from ..fetch.download import download

        part = self.part_path(file)
        regular_or_absent(part)
        result = download(client, urls, part, file, progress.file(model.name, file.path, file.size), model.name,
                          tries, sticky=sticky)
        failpoints.hit("downloaded")
        try:
            os.replace(part, dest)
        except OSError as e:
            raise storage_error(e, "install", dest) from None
        self.owner.record_sha256(model, file, result.sha256)
        return result

    def _upload(self, model, file: LockedFile, path: Path, sha256: str, bad: dict[S3Cache, str],
                held: tuple[S3Cache, Lease] | None) -> None:
        """A favour to the other nodes: a bucket that is down, refuses or stays busy costs a warning."""
        from ..fetch.retry import retrying

        for cache in self.remotes:
            # A bucket given up on, or read only, is neither leased nor written.
            if not cache.write or not cache.circuit.wait():
                continue
            own: Lease | None = None
            try:
                etag = cache.head(file)
                if etag is not None and bad.get(cache) != etag:
                    continue  # another node's copy arrived meanwhile
                if held is None or held[0] is not cache:
                    # Nodes that fetched without a lease (the bucket was down then) would all upload at once.
                    go, own = self.flight.lease_for_upload(cache, file)
                    if not go:
                        continue
                try:
                    for attempt in retrying(self.net, "upload to the remote cache", model.name, file.path,
                                            quiet=True, cache=cache.url):
                        with attempt:
                            cache.upload(path, file, sha256)
                except CacheBusy as e:  # busy through every retry: not worth more writes this run
                    cache.read_only(e, "uploads to the remote cache keep failing; reading only")
                    continue
                log.info("uploaded to remote cache", cache=cache.url, model=model.name, file=file.path,
                         bytes=file.size)
            except CacheUnavailable as e:
                cache.trouble(e)
            finally:
                if own is not None:
                    cache.release(own)

    def _client_for(self, cache: S3Cache):
        """The HTTP client for a bucket's presigned URLs: no hub token, and plain http allowed to an
        endpoint the user configured."""
        from dataclasses import replace

        from ..sources.s3 import network

        # One attempt: a bucket in trouble is the circuit's to wait out, not every part's to retry.
        return self._client(replace(network(self.net), attempts=1))

    def origin_client(self, model: LockedModel):
        from ..sources import network

        return self._client(network(model, self.net))

    def _client(self, net: Network):
        from ..fetch.transport import Client

        with self._mutex:
            if net not in self._clients:
                self._clients[net] = Client(net, self.parts)
            return self._clients[net]
