"""Another seeded target, read as a cache: models bundled in an image, or a colleague's ``./models``.

Given as ``--cache DIR`` where DIR is a seeder target (it has ``.seeder/state.json``). Its files are
found by content address through that state, so a renamed model still matches; they are copied into
the target and hashed on the way like any cached blob, and nothing is ever written to the seeded
target (an image layer is read-only, and another target is not ours to change).
"""

from __future__ import annotations

from pathlib import Path

from .cache import ReadOnlyCache
from .target import Target


def is_seeded(root: Path) -> bool:
    return Target(root).state_file.is_file()


class Seeded(ReadOnlyCache):
    def _list(self) -> dict[str, Path]:
        target, index = Target(self.root), {}
        for record in target.read_state().values():
            for file in record.model.files:
                index.setdefault(file.digest, target.file_path(record.model, file))
        return index
