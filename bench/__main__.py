"""``python -m bench``: the same as ``python bench/run.py``."""

import sys

from bench.cli import main

sys.exit(main(prog="python -m bench"))
