"""Place every file of a lock in its version directory, then publish each complete model."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor
from pathlib import Path

from .. import failpoints, log
from ..errors import IntegrityError, RemoteError, SeederError, StorageError
from ..fmt import human_bytes
from ..integrity import ContentMismatch, Hasher, hash_file
from ..settings import Network, Parts
from ..spec.lock import Lock, LockedFile, LockedModel
from ..store import Cache, Target
from ..store.fs import copy_hashed, regular_or_absent, same_device, same_file, stamp, storage_error
from ..store.cache import LocalCache
from ..store.s3 import S3Cache
from .summary import Summary
from .chain import Chain

Source = tuple[Path, str | None]
"""A verified copy of a file already in the target, and its sha256 when known."""


class Installer:
    """Brings every file of a lock into a target. One instance per run, under the target's flock."""

    def __init__(self, target: Target, caches: list[Cache | S3Cache], net: Network | None, parts: Parts, jobs: int,
                 verified: dict[Path, str] | None = None):
        self.target, self.jobs = target, jobs
        self.verified = verified or {}  # path -> sha256 of files the caller hashed this run: linked, not hashed again
        self.state = target.read_state()
        self.summary = Summary()
        self.published: list[LockedModel] = []
        self.installed: list[LockedModel] = []  # what the target holds once the run is done
        self._per_digest: dict[str, threading.Lock] = {}
        self._mutex = threading.Lock()
        self.sha256s: dict[tuple[str, str], str] = {}
        self.chain = Chain(self, caches, net, parts)

    # -- planning --

    def _index_installed(self) -> dict[str, Source]:
        """Digest -> a verified file of any installed version (and its sha256), so a refresh reuses it."""
        index = {}
        for record in self.state.values():
            for file in record.model.files:
                rec = record.files[file.path]
                path = self.target.file_path(record.model, file)
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
        absent = [(m, f, self.chain.local_source(f)) for m, f, have in todo if have is None]
        missing = [(m, f) for m, f, source in absent if source is None]
        if missing and self.chain.net.offline:
            if unreachable := [(m, f) for m, f in missing if not self.chain.remote_has(f)]:
                names = ", ".join(f"{m.name}/{f.path}" for m, f in unreachable)
                raise RemoteError(f"offline and not in the target or any cache: {names}")
        self._check_space(missing, [(f, source) for m, f, source in absent if source is not None])
        errors, failed = self._run_all(todo, sum(f.size for m, f in missing))
        self.published = [m for m in lock.models if m.name not in failed]
        self.installed = list(lock.models)
        for model in self.published:
            self._install(model)
        self.summary.files = len(todo)
        self.summary.seconds = time.monotonic() - started
        return errors

    def _run_all(self, todo, total: int) -> tuple[list[SeederError], set[str]]:
        progress = log.Progress(total)
        errors: list[SeederError] = []
        failed: set[str] = set()
        refused: set[str] = set()

        def place(model: LockedModel, file: LockedFile, have: Source | None) -> None:
            # Marked by the worker that met the refusal, before the main thread reads it: a worker that
            # would take up another of the model's files meanwhile skips it instead of asking again.
            if model.name in refused:
                raise _Skipped
            try:
                self._place(model, file, have, progress)
            except RemoteError:
                refused.add(model.name)
                raise

        pool = ThreadPoolExecutor(max_workers=max(1, self.jobs))
        try:
            futures = {pool.submit(place, m, f, have): m for m, f, have in todo}
            for future, model in futures.items():
                try:
                    future.result()
                except (CancelledError, _Skipped):
                    continue
                except RemoteError as e:
                    # The origin refused or lacks this model (gated, gone, unreachable): its other files would
                    # only ask again, one refusal and one error line each, against the hub's rate limit.
                    errors.append(e)
                    failed.add(model.name)
                    for other, m in futures.items():
                        if m is model:
                            other.cancel()
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
            self.chain.layers.clear()
        return errors, failed

    def _check_space(self, missing: list[tuple[LockedModel, LockedFile]],
                     cached: list[tuple[LockedFile, LocalCache]]) -> None:
        """Room for the downloads where they land, and for every copy the target gets from another
        filesystem (a cache there, models bundled in an image): checked before a byte is written."""
        from ..fetch.partial import size_on_disk

        landing = self.chain.primary or self.target
        need = {landing.root: [landing, 0]}
        for model, file in missing:
            need[landing.root][1] += max(0, file.size - size_on_disk(self.chain.part_path(file)))
        copied: dict[Path, bool] = {}  # per source root: does the target get copies (not hardlinks) from it?
        for root in {landing.root, *(source.root for _, source in cached)}:
            copied[root] = not same_device(root, self.target.root)
        copies = [f.size for m, f in missing] if copied[landing.root] else []
        copies += [f.size for f, source in cached if not source.writable or copied[source.root]]
        need.setdefault(self.target.root, [self.target, 0])[1] += sum(copies)
        for store, bytes_needed in need.values():
            free = store.free_bytes()
            if bytes_needed > free:
                raise StorageError(f"not enough space in {store.root}: need {human_bytes(bytes_needed)}, "
                                   f"{human_bytes(free)} free (short by {human_bytes(bytes_needed - free)})")

    # -- placing one file --

    def _place(self, model: LockedModel, file: LockedFile, have: Source | None, progress) -> None:
        key = (model.name, file.path)
        final = self.target.file_path(model, file)
        self.target.check_inside(model, final.parent)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise storage_error(e, "create", final.parent) from None
        if have is not None and self._reuse(have, final, file, key):
            return
        if self._already_there(final, file, key):
            return
        with self._serialized(file):
            self.chain.obtain(model, file, final, progress)

    def _reuse(self, have: Source, final: Path, file: LockedFile, key: tuple[str, str]) -> bool:
        source, sha256 = have
        try:
            if not same_file(source, final):
                sha256 = self.link_or_copy(source, final, file) or sha256
                log.debug("reused", model=key[0], file=file.path, source=str(source))
        except ContentMismatch:
            return False  # changed on disk since it was recorded: fetch it like any missing file
        if sha256:
            self.sha256s[key] = sha256
        self.count(reused=file.size)
        return True

    def _already_there(self, final: Path, file: LockedFile, key: tuple[str, str]) -> bool:
        """A file renamed into place (so verified) by a run killed before it recorded it: check, keep."""
        regular_or_absent(final)
        if not final.exists():
            return False
        try:
            self.sha256s[key] = hash_file(final, file).check()
            self.count(reused=file.size)
            return True
        except ContentMismatch:
            for cache in self.chain.locals:
                if cache.has(file) and same_file(final, cache.blob(file)):
                    # A hardlinked file changed in place changed the cached copy with it.
                    cache.discard(file)
            final.unlink()
            return False

    def _serialized(self, file: LockedFile) -> threading.Lock:
        # Two models may list the same bytes; fetch them once.
        with self._mutex:
            return self._per_digest.setdefault(file.digest, threading.Lock())

    def link_or_copy(self, source: Path, final: Path, file: LockedFile, trusted: bool = True,
                     link: bool = True) -> str | None:
        """Install ``source`` at ``final``: a hardlink (unless ``link`` is False) or a copy hashed on the
        way. A hardlink of a ``trusted`` source (verified by this run, or stamped in this target), or of one in
        ``verified``, is not hashed again. Returns the sha256 when it was computed or known."""
        tmp = self.target.tmp / f"{file.digest}.{threading.get_ident()}.link"
        tmp.unlink(missing_ok=True)
        sha256 = known = self.verified.get(source)
        try:
            if link and _hardlinked(source, tmp):
                if known is None and (not trusted or file.sha256 is None):  # hashed through the link
                    sha256 = hash_file(tmp, file).check()
            else:
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

    def count(self, downloaded: int = 0, reused: int = 0, from_cache: int = 0) -> None:
        with self._mutex:
            self.summary.downloaded += downloaded
            self.summary.reused += reused
            self.summary.from_cache += from_cache

    def record_sha256(self, model: LockedModel, file: LockedFile, sha256: str | None) -> None:
        if sha256:
            self.sha256s[(model.name, file.path)] = sha256

    # -- publishing --

    def _install(self, model: LockedModel) -> None:
        old = self.state.get(model.name)
        sha256s = {p: s for (n, p), s in self.sha256s.items() if n == model.name}
        if old and old.version == model.version:
            sha256s = {p: r.sha256 for p, r in old.files.items() if r.sha256} | sha256s
        self.state[model.name] = self.target.record(model, sha256s)
        self.target.write_state(self.state)
        failpoints.hit("recorded")
        self.target.publish(model, self.installed)

    def remove_unlisted(self, lock: Lock) -> None:
        """Unpublish and delete models the target has and ``lock`` no longer lists."""
        for name in sorted(set(self.state) - {m.name for m in lock.models}):
            self.target.remove_model(self.state[name].model, list(lock.models))
            del self.state[name]
            log.info("removed", model=name)
        self.target.write_state(self.state)

    def prune(self, grace: float) -> None:
        """Delete versions this run replaced, after a grace period for readers that resolved the old link."""
        old = [m for m in self.published if self.target.old_versions(m, self.installed)]
        if not old:
            return
        if grace > 0:
            log.info("keeping replaced versions for readers", models=[m.name for m in old], seconds=grace)
            time.sleep(grace)
        for model in old:
            self.target.prune_versions(model, self.installed)


class _Skipped(Exception):
    """A file of a model the origin already refused in this run: not asked for."""


def _hardlinked(source: Path, link: Path) -> bool:
    try:
        os.link(source, link)
        return True
    except OSError:  # another filesystem, or one without hardlinks: copy instead
        return False
