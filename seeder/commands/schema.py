"""``seeder schema``: print the JSON Schema of models.toml, for TOML language servers (taplo, Even
Better TOML): ``seeder schema > models.schema.json`` and ``#:schema ./models.schema.json`` as the
manifest's first line."""

from __future__ import annotations

import sys

from ..errors import OK
from ..spec import schema


def run(args, cfg, net) -> int:
    sys.stdout.write(schema.text())
    return OK
