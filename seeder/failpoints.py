"""Named crash points, so tests can SIGKILL a run at an exact step instead of at a guessed time.

``SEEDER_FAILPOINT=<name>`` makes the process announce ``failpoint <name>`` on stderr when it
reaches that step, then wait there to be killed. Unset (always, outside tests), ``hit`` is a no-op.
"""

from __future__ import annotations

import os
import sys
import time

_ARMED = os.environ.get("SEEDER_FAILPOINT")


def hit(name: str) -> None:
    if _ARMED == name:
        sys.stderr.write(f"failpoint {name}\n")
        sys.stderr.flush()
        while True:
            time.sleep(60)
