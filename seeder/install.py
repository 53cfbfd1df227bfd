"""Apply a lock to a target: the one install path of ``seed``, ``refresh`` and ``import``.

:func:`install` takes the target's flock, clears the completion marker, places every file (reused
from the target, linked or copied from a cache, or fetched from its source), publishes each model
with one rename, records the state, removes models the lock dropped (when asked), keeps replaced
versions for ``grace`` seconds, and writes the marker last. Every byte that reaches a target was
verified: downloads by :mod:`seeder.fetch`, cached blobs on their way in, earlier installs by their
stamps.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import failpoints, log
from .errors import IntegrityError, RemoteError, SeederError, StorageError
from .fmt import human_bytes
from .integrity import ContentMismatch, Hasher, hash_file
from .settings import Network, Parts
from .spec.lock import Lock, LockedFile, LockedModel
from .store import Cache, Target
from .store.fs import copy_hashed, regular_or_absent, same_file, stamp, storage_error, write_atomic

Source = tuple[Path, str | None]
"""A verified copy of a file already in the target, and its sha256 when known."""


@dataclass
class Summary:
    files: int = 0
    downloaded: int = 0
    reused: int = 0
    seconds: float = 0.0
    models: list[str] = field(default_factory=list)

    def emit(self) -> None:
        rate = self.downloaded / self.seconds if self.seconds > 0 else 0
        log.info("summary", models=len(self.models), files=self.files, bytes_downloaded=self.downloaded,
                 bytes_reused=self.reused, seconds=round(self.seconds, 3), throughput=round(rate))

    @classmethod
    def warm(cls, lock: Lock, seconds: float) -> Summary:
        return cls(files=sum(len(m.files) for m in lock.models), reused=sum(m.total_size for m in lock.models),
                   seconds=seconds, models=[m.name for m in lock.models])


def install(lock: Lock, target: Target, *, cache: Cache | None = None, net: Network | None = None,
            parts: Parts | None = None, jobs: int = 4, grace: float = 0.0, remove_unlisted: bool = False,
            record_lock: bool = False, unless_complete: bool = False) -> Summary:
    """Bring ``target`` to exactly ``lock``. ``net`` None (or offline): nothing is fetched, and files
    missing from the target and the cache are an error. ``record_lock`` keeps the lock in the target's
    state, for a target filled from a bundle. ``unless_complete``: do nothing if, once the flock is
    ours, another seeder has completed the same lock meanwhile."""
    started = time.monotonic()
    with target.exclusive():
        if unless_complete and target.is_complete(lock):
            return Summary.warm(lock, time.monotonic() - started)
        if cache is not None:
            cache.ensure()
        target.clear_marker()
        installer = Installer(target, cache, net if net is not None and not net.offline else None,
                              parts or Parts(), jobs)
        errors = installer.place_all(lock)
        if remove_unlisted and not errors:
            installer.remove_unlisted(lock)
        installer.prune(grace)
        if errors:
            for e in errors[1:]:
                log.error("failed", error=str(e))
            raise errors[0]
        if record_lock:
            write_atomic(target.lock_copy, lock.dumps())
        target.write_marker(lock)
    return installer.summary


class Installer:
    """Brings every file of a lock into a target. One instance per run, under the target's flock."""

    def __init__(self, target: Target, cache: Cache | None, net: Network | None, parts: Parts, jobs: int):
        self.target, self.cache, self.net, self.parts, self.jobs = target, cache, net, parts, jobs
        self.state = target.read_state()
        self.summary = Summary()
        self._client = None
        self.published: list[LockedModel] = []
        self._per_digest: dict[str, threading.Lock] = {}
        self._placed: dict[str, tuple[Path, tuple[str, str]]] = {}  # digest -> where this run put it
        self._mutex = threading.Lock()
        self.sha256s: dict[tuple[str, str], str] = {}

    @property
    def client(self):
        # One per run, made by the first worker that needs it: each Client keeps its own per-thread
        # connections, so a second one would open a second set.
        with self._mutex:
            if self._client is None:
                from .fetch.transport import Client

                self._client = Client(self.net, self.parts)
            return self._client

    # -- planning --

    def _index_installed(self) -> dict[str, Source]:
        """Digest -> a verified file of any installed version (and its sha256), so a refresh reuses it."""
        index = {}
        for record in self.state.values():
            for file in record.model.files:
                rec = record.files[file.path]
                path = self.target.version_dir(record.model) / file.path
                if stamp(path) == rec.stamp:
                    index[file.digest] = (path, rec.sha256)
        return index

    def place_all(self, lock: Lock) -> list[SeederError]:
        """Every file of ``lock`` in its version directory, then each complete model published; returns
        what failed (the other models are published all the same)."""
        started = time.monotonic()
        index = self._index_installed()
        todo = [(m, f, index.get(f.digest)) for m in lock.models for f in m.files]
        self.summary.models = [m.name for m in lock.models]
        missing = [(m, f) for m, f, have in todo if have is None and (self.cache is None or not self.cache.has(f))]
        if missing and self.net is None:
            names = ", ".join(f"{m.name}/{f.path}" for m, f in missing)
            raise RemoteError(f"offline and not in the target or cache: {names}")
        self._check_space(missing)
        errors, failed = self._run_all(todo, sum(f.size for m, f in missing))
        self.published = [m for m in lock.models if m.name not in failed]
        for model in self.published:
            self._install(model)
        self.summary.files = len(todo)
        self.summary.seconds = time.monotonic() - started
        return errors

    def _run_all(self, todo, total: int) -> tuple[list[SeederError], set[str]]:
        progress = log.Progress(total)
        errors: list[SeederError] = []
        failed: set[str] = set()
        pool = ThreadPoolExecutor(max_workers=max(1, self.jobs))
        try:
            futures = {pool.submit(self._place, m, f, have, progress): m for m, f, have in todo}
            for future, model in futures.items():
                try:
                    future.result()
                except SeederError as e:
                    errors.append(e)
                    failed.add(model.name)
                except ContentMismatch as e:  # a file this run placed changed under it
                    errors.append(IntegrityError(f"{model.name}: {e}"))
                    failed.add(model.name)
                except OSError as e:
                    errors.append(storage_error(e, "write", self.target.root))
                    failed.add(model.name)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: don't wait for the downloads in flight
            raise
        else:
            pool.shutdown()
        finally:
            progress.close()
        return errors, failed

    def _check_space(self, missing: list[tuple[LockedModel, LockedFile]]) -> None:
        need = 0
        for model, file in missing:
            part = self._part_path(file)
            have = part.stat().st_size if part.exists() else 0
            need += max(0, file.size - have)
        where = self.cache.root if self.cache else self.target.root
        free = (self.cache or self.target).free_bytes()
        if need > free:
            raise StorageError(f"not enough space in {where}: need {human_bytes(need)}, {human_bytes(free)} free "
                               f"(short by {human_bytes(need - free)})")

    # -- placing one file --

    def _part_path(self, file: LockedFile) -> Path:
        from .fetch.partial import partial_path

        return partial_path(self.cache.tmp if self.cache else self.target.tmp, file)

    def _place(self, model: LockedModel, file: LockedFile, have: Source | None, progress) -> None:
        key = (model.name, file.path)
        final = self.target.version_dir(model) / file.path
        self.target.check_inside(final.parent)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise storage_error(e, "create", final.parent) from None
        if have is not None and self._reuse(have, final, file, key):
            return
        if self._already_there(final, file, key):
            return
        with self._serialized(file):
            if self.cache is None:
                self._place_uncached(model, file, final, key, progress)
            else:
                self._place_cached(model, file, final, key, progress)

    def _reuse(self, have: Source, final: Path, file: LockedFile, key: tuple[str, str]) -> bool:
        source, sha256 = have
        try:
            if not same_file(source, final):
                sha256 = self._link_or_copy(source, final, file) or sha256
                log.debug("reused", model=key[0], file=file.path, source=str(source))
        except ContentMismatch:
            return False  # changed on disk since it was recorded: fetch it like any missing file
        if sha256:
            self.sha256s[key] = sha256
        self._count(reused=file.size)
        return True

    def _already_there(self, final: Path, file: LockedFile, key: tuple[str, str]) -> bool:
        """A file renamed into place (so verified) by a run killed before it recorded it: check, keep."""
        regular_or_absent(final)
        if not final.exists():
            return False
        try:
            self.sha256s[key] = hash_file(final, file).check()
            self._count(reused=file.size)
            return True
        except ContentMismatch:
            if self.cache is not None and same_file(final, self.cache.blob(file)):
                # A hardlinked file changed in place changed the cached copy with it.
                self.cache.blob(file).unlink(missing_ok=True)
            final.unlink()
            return False

    def _place_uncached(self, model, file, final, key, progress) -> None:
        if file.digest in self._placed:  # two models list the same bytes
            done, done_key = self._placed[file.digest]
            if sha256 := self._link_or_copy(done, final, file) or self.sha256s.get(done_key):
                self.sha256s[key] = sha256
            self._count(reused=file.size)
        else:
            self._fetch(model, file, final, progress)
            self._placed[file.digest] = (final, key)

    def _place_cached(self, model, file, final, key, progress) -> None:
        blob = self.cache.blob(file)
        for attempt in (1, 2):
            with self.cache.exclusive(file.digest):
                fetched = not self.cache.has(file)
                if fetched:
                    self._fetch(model, file, blob, progress)
                else:
                    self._count(reused=file.size)
            try:
                # A blob this run did not just verify is hashed on its way in: a cache is shared, and
                # its name alone proves nothing about its bytes.
                if sha256 := self._link_or_copy(blob, final, file, trusted=fetched):
                    self.sha256s[key] = sha256
                return
            except ContentMismatch as e:
                if attempt == 2:
                    raise IntegrityError(f"{model.name}/{file.path}: {e}") from None
                log.warning("cached copy damaged, downloading again", model=model.name, file=file.path,
                            error=str(e))
                with self.cache.exclusive(file.digest):
                    blob.unlink(missing_ok=True)

    def _serialized(self, file: LockedFile) -> threading.Lock:
        # Two models may list the same bytes; fetch them once.
        with self._mutex:
            return self._per_digest.setdefault(file.digest, threading.Lock())

    def _fetch(self, model: LockedModel, file: LockedFile, dest: Path, progress) -> None:
        from .fetch.download import download
        from .sources import file_urls

        part = self._part_path(file)
        regular_or_absent(part)
        log.info("downloading", model=model.name, file=file.path, bytes=file.size)
        result = download(self.client, file_urls(model, file, self.net), part,
                          file, progress.file(model.name, file.path, file.size), model.name)
        failpoints.hit("downloaded")
        try:
            os.replace(part, dest)
        except OSError as e:
            raise storage_error(e, "install", dest) from None
        self.sha256s[(model.name, file.path)] = result.sha256
        self._count(downloaded=result.fetched, reused=file.size - result.fetched)
        log.info("downloaded", model=model.name, file=file.path, bytes=result.fetched)

    def _link_or_copy(self, source: Path, final: Path, file: LockedFile, trusted: bool = True) -> str | None:
        """Install ``source`` at ``final``: a hardlink or a copy hashed on the way. A hardlink of a
        ``trusted`` source (verified by this run, or stamped in this target) is not hashed again.
        Returns the sha256 when it was computed."""
        tmp = self.target.tmp / f"{file.digest}.{threading.get_ident()}.link"
        tmp.unlink(missing_ok=True)
        sha256 = None
        try:
            try:
                os.link(source, tmp)
                if not trusted or file.sha256 is None:  # hashed through the link: the bytes installed
                    sha256 = hash_file(tmp, file).check()
            except OSError:
                hasher = Hasher(file)
                with open(source, "rb") as src:
                    copy_hashed(src, tmp, hasher)
                sha256 = hasher.check()
            os.replace(tmp, final)
        except OSError as e:
            raise storage_error(e, "install", final) from None
        finally:
            tmp.unlink(missing_ok=True)
        return sha256

    def _count(self, downloaded: int = 0, reused: int = 0) -> None:
        with self._mutex:
            self.summary.downloaded += downloaded
            self.summary.reused += reused

    # -- publishing --

    def _install(self, model: LockedModel) -> None:
        old = self.state.get(model.name)
        sha256s = {p: s for (n, p), s in self.sha256s.items() if n == model.name}
        if old and old.version == model.version:
            sha256s = {p: r.sha256 for p, r in old.files.items() if r.sha256} | sha256s
        self.state[model.name] = self.target.record(model, sha256s)
        self.target.write_state(self.state)
        failpoints.hit("recorded")
        self.target.publish(model)

    def remove_unlisted(self, lock: Lock) -> None:
        """Unpublish and delete models the target has and ``lock`` no longer lists."""
        for name in sorted(set(self.state) - {m.name for m in lock.models}):
            self.target.remove_model(name)
            del self.state[name]
            log.info("removed", model=name)
        self.target.write_state(self.state)

    def prune(self, grace: float) -> None:
        """Delete versions this run replaced, after a grace period for readers that resolved the old link."""
        old = [m for m in self.published if self.target.old_versions(m)]
        if not old:
            return
        if grace > 0:
            log.info("keeping replaced versions for readers", models=[m.name for m in old], seconds=grace)
            time.sleep(grace)
        for model in old:
            self.target.prune_versions(model)
