"""Files that come packed in an archive (an OCI tar layer): the archive fetched once per run through the
download engine (Range parts, resume across runs, its digest checked), unpacked once into a scratch
directory of the tmp dir, and each member linked into place from there.

The members were hashed as they were unpacked, and the lock says what each must hash to: a member that
differs from its lock entry is an integrity error, never installed. The scratch directories go when the
run's installs are done.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from .. import log
from ..errors import IntegrityError
from ..spec.lock import LockedFile, LockedModel


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
        self._unpacked: dict[str, tuple[Path, dict]] = {}  # layer digest -> (directory, path -> Member)

    def member(self, model: LockedModel, file: LockedFile, dest: Path, progress) -> Unpacked:
        """``file``'s verified bytes at ``dest``, from the archive the source says it comes in."""
        layer = file.pin("layer")
        with self._mutex:
            lock = self._locks.setdefault(layer, threading.Lock())
        fetched = 0
        with lock:
            if layer not in self._unpacked:
                self._unpacked[layer], fetched = self._unpack(model, file, layer, progress)
        directory, members = self._unpacked[layer]
        found = members.get(file.path)
        if found is None or (found.size, found.sha256) != (file.size, file.sha256):
            got = "is not in it" if found is None else f"has sha256 {found.sha256}, size {found.size}"
            raise IntegrityError(f"{model.name}/{file.path}: the layer {layer} {got}; the lock wants "
                                 f"sha256 {file.sha256}, size {file.size}")
        self.chain.owner.link_or_copy(directory / file.path, dest, file, trusted=True)
        return Unpacked(found.sha256, fetched)

    def _unpack(self, model: LockedModel, file: LockedFile, layer: str, progress) -> tuple[tuple[Path, dict], int]:
        from ..fetch.download import download
        from ..sources import archive
        from ..untar import unpack

        packed = archive(model, file, self.chain.net)
        assert packed is not None  # the file has a layer: its source packs it
        part = self.chain.part_path(packed.file)
        log.info("downloading layer", model=model.name, layer=layer, bytes=packed.file.size)
        client = self.chain.origin_client(model)
        result = download(client, packed.urls, part, packed.file, progress.file(model.name, packed.file.path,
                          packed.file.size), model.name)
        directory = part.with_name(f"{layer.replace(':', '-')}.unpacked")
        shutil.rmtree(directory, ignore_errors=True)  # a run killed while it unpacked
        members = unpack(part, packed.media_type, layer, directory)
        part.unlink(missing_ok=True)
        log.info("unpacked layer", model=model.name, layer=layer, files=len(members))
        return (directory, {m.path: m for m in members}), result.fetched

    def clear(self) -> None:
        with self._mutex:
            for directory, _ in self._unpacked.values():
                shutil.rmtree(directory, ignore_errors=True)
            self._unpacked.clear()
