"""The JSON Schema of ``models.toml`` (draft-07, using only what draft-04 tools such as taplo read),
shipped in the package as ``models.schema.json`` so ``seeder schema`` can hand it to an editor.

It describes what :mod:`seeder.spec.manifest` accepts, as far as JSON Schema can say it; what it cannot
(duplicate names, balanced glob brackets) the parser still reports. tests/test_schema.py keeps the two
in agreement.
"""

from __future__ import annotations

from importlib.resources import files

FILE = "models.schema.json"


def text() -> str:
    return files(__package__).joinpath(FILE).read_text("utf-8")
