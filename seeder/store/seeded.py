"""Another seeded target, read as a cache: models bundled in an image, or a colleague's ``./models``.

Given as ``--cache DIR`` where DIR is a seeder target (it has ``.seeder/state.json``). Its files are
found by content address through that state, so a renamed model still matches; they are copied into
the target and hashed on the way like any cached blob, and nothing is ever written to the seeded
target (an image layer is read-only, and another target is not ours to change).
"""

from __future__ import annotations

from pathlib import Path

from ..spec.lock import LockedFile
from .fs import stamp
from .target import Target


def is_seeded(root: Path) -> bool:
    return Target(root).state_file.is_file()


class Seeded:
    writable = False

    def __init__(self, root: Path):
        self.root = root
        self._index: dict[str, Path] | None = None

    def _paths(self) -> dict[str, Path]:
        if self._index is None:  # read once, on first use: a warm run never opens it
            target, index = Target(self.root), {}
            for record in target.read_state().values():
                for file in record.model.files:
                    index.setdefault(file.digest, target.file_path(record.model, file))
            self._index = index
        return self._index

    def has(self, file: LockedFile) -> bool:
        path = self._paths().get(file.digest)
        st = stamp(path) if path else None
        return st is not None and st[0] == file.size

    def blob(self, file: LockedFile) -> Path:
        return self._paths()[file.digest]

    def discard(self, file: LockedFile) -> None:
        """A damaged file is only forgotten (the next source is tried): the seeded target is not ours."""
        self._paths().pop(file.digest, None)
