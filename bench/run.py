#!/usr/bin/env python3
"""Entry point for ``python bench/run.py``; the benchmark itself is the ``bench`` package (see its __init__)."""

import sys
from pathlib import Path

if __name__ == "__main__":
    # As a script, Python puts bench/ itself first on sys.path, where bench's modules (common, report, ...)
    # would pass for top-level ones; the repository root belongs there, so that ``bench`` is a package.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
