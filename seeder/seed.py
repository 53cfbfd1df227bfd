"""Execute a lock against a target: reuse what is there, fetch the rest, install atomically."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import failpoints, log
from . import lock as lockfile
from .config import Network
from .errors import IntegrityError, LockError, RemoteError, SeederError, StorageError
from .fmt import human_bytes
from .lock import Lock, LockedFile, LockedModel
from .manifest import Manifest
from .store import (Cache, Installed, Target, copy_hashed, regular_or_absent, stamp, storage_error,
                    write_atomic)


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


def current_lock(manifest: Manifest, target: Target) -> Lock | None:
    """The lock beside the manifest or, where there is none, the one kept in the target's state."""
    current = lockfile.read(lockfile.lock_path_for(manifest.path))
    return current if current is not None else lockfile.read(target.lock_copy)


def obtain_lock(manifest: Manifest, target: Target, *, locked: bool, net: Network | None) -> Lock:
    """The lock to seed from: the manifest's own when it matches, else re-resolved (and written back)."""
    path = lockfile.lock_path_for(manifest.path)
    current = current_lock(manifest, target)
    if current is not None and current.matches(manifest):
        return current
    current = current or Lock(models=())
    stale = current.stale_models(manifest)
    why = f"{path} is missing" if not current.models else f"{path} is out of date for {', '.join(stale) or 'removed models'}"
    if locked:
        raise LockError(f"{why}; run `seeder lock` and commit the result")
    fresh = {}
    if stale:  # only dropping models needs no hub
        if net is None or net.offline:
            raise RemoteError(f"offline: {why} and resolving needs the hub")
        from .resolve import resolve
        from .transfer import Client

        fresh = resolve(manifest, stale, net, Client(net))
    new = current.updated(manifest, fresh)
    save_lock(new, path, target)
    return new


def save_lock(lock: Lock, path: Path, target: Target | None) -> Path:
    try:
        write_atomic(path, lock.dumps())
        log.info("lock written", path=str(path))
        return path
    except StorageError as e:
        if target is None:
            raise
        target.ensure()
        write_atomic(target.lock_copy, lock.dumps())
        log.warning("lock kept in the target's state: the manifest's directory is not writable; "
                    "run `seeder lock` where it is and commit models.lock", error=str(e), path=str(target.lock_copy))
        return target.lock_copy


class Installer:
    """Brings every file of a lock into a target. One instance per run, under the target's mutex."""

    def __init__(self, target: Target, cache: Cache | None, net: Network, jobs: int, grace: float = 0.0):
        self.target, self.cache, self.net, self.jobs = target, cache, net, jobs
        self.grace = grace
        self.state = target.read_state()
        self.summary = Summary()
        self._client = None
        self._digest_locks: dict[str, threading.Lock] = {}
        self._placed: dict[str, tuple[Path, tuple[str, str]]] = {}  # digest -> where this run put it
        self._guard = threading.Lock()
        self.sha256s: dict[tuple[str, str], str] = {}

    @property
    def client(self):
        if self._client is None:
            from .transfer import Client

            self._client = Client(self.net)
        return self._client

    # -- planning --

    def _index_installed(self) -> dict[str, tuple[Path, str | None]]:
        """Digest -> a verified file of any installed version (and its sha256), so a refresh reuses it."""
        index = {}
        for record in self.state.values():
            for file in record.model.files:
                rec = record.files[file.path]
                path = self.target.version_dir(record.model) / file.path
                if stamp(path) == tuple(rec["stamp"]):
                    index[file.digest] = (path, rec.get("sha256"))
        return index

    def _needs_fetch(self, file: LockedFile) -> bool:
        return self.cache is None or not self.cache.has(file)

    def run(self, lock: Lock) -> Summary:
        started = time.monotonic()
        index = self._index_installed()
        todo: list[tuple[LockedModel, LockedFile, tuple[Path, str | None] | None]] = []
        for model in lock.models:
            self.summary.models.append(model.name)
            for file in model.files:
                todo.append((model, file, index.get(file.digest)))
        missing = [(m, f) for m, f, have in todo if have is None and self._needs_fetch(f)]
        if missing and self.net.offline:
            names = ", ".join(f"{m.name}/{f.path}" for m, f in missing)
            raise RemoteError(f"offline and not in the target or cache: {names}")
        self._check_space(missing)

        progress = log.Progress(sum(f.size for m, f in missing))
        errors: list[SeederError] = []
        failed_models: set[str] = set()
        pool = ThreadPoolExecutor(max_workers=max(1, self.jobs))
        try:
            futures = {pool.submit(self._place, m, f, have, progress): (m, f) for m, f, have in todo}
            for future, (model, _) in futures.items():
                try:
                    future.result()
                except SeederError as e:
                    errors.append(e)
                    failed_models.add(model.name)
                except OSError as e:
                    errors.append(storage_error(e, "write", self.target.root))
                    failed_models.add(model.name)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: don't wait for the downloads in flight
            raise
        else:
            pool.shutdown()
        finally:
            progress.close()

        installed = [m for m in lock.models if m.name not in failed_models]
        for model in installed:
            self._install(model)
        self._prune(installed)
        if errors:
            for e in errors[1:]:
                log.error("failed", error=str(e))
            raise errors[0]
        self.target.write_marker(lock)
        self.summary.files = len(todo)
        self.summary.seconds = time.monotonic() - started
        return self.summary

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

    # -- execution --

    def _part_path(self, file: LockedFile) -> Path:
        base = self.cache.tmp if self.cache else self.target.tmp
        return base / f"{file.digest}.part"

    def _place(self, model: LockedModel, file: LockedFile, have: tuple[Path, str | None] | None,
               progress) -> None:
        from .transfer import ContentMismatch, hash_file

        key = (model.name, file.path)
        final = self.target.version_dir(model) / file.path
        self.target.check_inside(final.parent)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise storage_error(e, "create", final.parent) from None
        if have is not None:
            source, sha256 = have
            try:
                if not _same(source, final):
                    sha256 = self._link_or_copy(source, final, file) or sha256
                    log.debug("reused", model=model.name, file=file.path, source=str(source))
                if sha256:
                    self.sha256s[key] = sha256
                self._count(reused=file.size)
                return
            except ContentMismatch:
                pass  # changed on disk since it was recorded: fetch it like any missing file
        regular_or_absent(final)
        if final.exists():
            # Renamed into place (so verified) by a run killed before it recorded the file: check, keep.
            try:
                self.sha256s[key] = hash_file(final, file).check()
                self._count(reused=file.size)
                return
            except ContentMismatch:
                if self.cache is not None and _same(final, self.cache.blob(file)):
                    # A hardlinked file changed in place changed the cached copy with it.
                    self.cache.blob(file).unlink(missing_ok=True)
                final.unlink()
        with self._serialized(file):
            if self.cache is None:
                if file.digest in self._placed:
                    done, done_key = self._placed[file.digest]
                    if sha256 := self._link_or_copy(done, final, file) or self.sha256s.get(done_key):
                        self.sha256s[key] = sha256
                    self._count(reused=file.size)
                else:
                    self._fetch(model, file, final, progress)
                    self._placed[file.digest] = (final, key)
                return
            blob = self.cache.blob(file)
            for attempt in (1, 2):
                with self.cache.exclusive(file):
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
                    with self.cache.exclusive(file):
                        blob.unlink(missing_ok=True)

    def _serialized(self, file: LockedFile) -> threading.Lock:
        # Two models may list the same bytes; fetch them once.
        with self._guard:
            return self._digest_locks.setdefault(file.digest, threading.Lock())

    def _fetch(self, model: LockedModel, file: LockedFile, dest: Path, progress) -> None:
        from .resolve import file_urls
        from .transfer import download

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
        from .transfer import Hasher, hash_file

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
        with self._guard:
            self.summary.downloaded += downloaded
            self.summary.reused += reused

    def _install(self, model: LockedModel) -> None:
        old = self.state.get(model.name)
        sha256s = {p: s for (n, p), s in self.sha256s.items() if n == model.name}
        if old and old.version == model.version:
            sha256s = {p: r.get("sha256") for p, r in old.files.items() if r.get("sha256")} | sha256s
        record: Installed = self.target.record(model, sha256s)
        self.state[model.name] = record
        self.target.write_state(self.state)
        failpoints.hit("recorded")
        self.target.publish(model)

    def _prune(self, models: list[LockedModel]) -> None:
        """Delete replaced versions, after a grace period for readers that resolved the old link."""
        old = [m for m in models if self.target.old_versions(m)]
        if not old:
            return
        if self.grace > 0:
            log.info("keeping replaced versions for readers", models=[m.name for m in old], seconds=self.grace)
            time.sleep(self.grace)
        for model in old:
            self.target.prune_versions(model)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def seed(manifest: Manifest, target: Target, cache: Cache | None, net: Network, *, locked: bool,
         jobs: int, grace: float = 0.0) -> Summary:
    started = time.monotonic()
    lock = obtain_lock(manifest, target, locked=locked, net=net)
    if target.is_complete(lock):
        return _warm_summary(lock, started)
    with target.exclusive():
        if target.is_complete(lock):
            return _warm_summary(lock, started)
        if cache is not None:
            cache.ensure()
        target.clear_marker()
        summary = Installer(target, cache, net, jobs, grace=grace).run(lock)
    summary.seconds = time.monotonic() - started
    return summary


def _warm_summary(lock: Lock, started: float) -> Summary:
    return Summary(files=sum(len(m.files) for m in lock.models), reused=sum(m.total_size for m in lock.models),
                   seconds=time.monotonic() - started, models=[m.name for m in lock.models])

