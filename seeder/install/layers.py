"""Files that come packed in an archive (an OCI tar layer): the archive fetched once per run through the
download engine (Range parts, resume across runs, its digest checked), unpacked once into a scratch
directory of the tmp dir, and each member linked into place from there.

The members were hashed as they were unpacked, and the lock says what each must hash to: a member that
differs from its lock entry is an integrity error, never installed. With a shared local cache, fetching and
unpacking hold the cache's lock of the archive's digest, as a download of any file holds its own; the
scratch directory is this process's (its pid in the name, so housekeeping can tell one left by a killed
run) and goes when the run's installs are done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from .. import log
from ..errors import IntegrityError
from ..spec.lock import LockedFile, LockedModel
from ..store.fs import regular_or_absent
from ..store.housekeeping import sweep_unpacked


@dataclass(frozen=True)
class Unpacked:
    sha256: str
    fetched: int
    """Bytes of the archive received over the network for this file (the first member pays for all)."""


class Layers:
    def __init__(self, chain):
        self.chain = chain
        self._mutex = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._unpacked: dict[str, tuple[Path, dict] | BaseException] = {}  # archive digest -> (dir, members) or why not

    def member(self, model: LockedModel, file: LockedFile, packed, dest: Path, progress) -> Unpacked:
        """``file``'s verified bytes at ``dest``, from the archive ``packed`` (:func:`seeder.sources.archive`)."""
        digest = packed.file.digest
        with self._mutex:
            lock = self._locks.setdefault(digest, threading.Lock())
        fetched = 0
        with lock:
            if digest not in self._unpacked:
                try:
                    self._unpacked[digest], fetched = self._unpack(model, packed, progress)
                except Exception as e:
                    self._unpacked[digest] = e  # its other members fail alike, without fetching it again
                    raise
        got = self._unpacked[digest]
        if isinstance(got, BaseException):
            raise got
        directory, members = got
        found = members.get(file.path)
        if found is None or (found.size, found.sha256) != (file.size, file.sha256):
            had = "does not hold it" if found is None else f"holds sha256 {found.sha256}, size {found.size}"
            raise IntegrityError(f"{model.name}/{file.path}: the layer {packed.file.sha256} {had}; the lock wants "
                                 f"sha256 {file.sha256}, size {file.size}")
        self.chain.owner.link_or_copy(directory / file.path, dest, file, trusted=True)
        return Unpacked(found.sha256, fetched)

    def _unpack(self, model: LockedModel, packed, progress) -> tuple[tuple[Path, dict], int]:
        from ..fetch.download import download
        from ..untar import unpack

        part = self.chain.part_path(packed.file)
        sweep_unpacked(part.parent)
        primary = self.chain.primary
        with primary.exclusive(packed.file.digest) if primary else contextlib.nullcontext():
            log.info("downloading layer", model=model.name, layer=packed.file.sha256, bytes=packed.file.size)
            regular_or_absent(part)
            result = download(self.chain.origin_client(model), packed.urls, part, packed.file,
                              progress.file(model.name, packed.file.path, packed.file.size), model.name)
            directory = part.with_name(f"{packed.file.digest}.{os.getpid()}.unpacked")
            shutil.rmtree(directory, ignore_errors=True)
            members = unpack(part, packed.media_type, f"sha256:{packed.file.sha256}", directory)
            part.unlink(missing_ok=True)
        log.info("unpacked layer", model=model.name, layer=packed.file.sha256, files=len(members))
        return (directory, {m.path: m for m in members}), result.fetched

    def clear(self) -> None:
        with self._mutex:
            for got in self._unpacked.values():
                if not isinstance(got, BaseException):
                    shutil.rmtree(got[0], ignore_errors=True)
            self._unpacked.clear()
