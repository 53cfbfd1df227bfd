"""A circuit breaker for a remote cache: an outage of seconds costs seconds, a dead store costs one warning.

Closed: every call goes through. The first failure opens it (one warning): nobody asks the store
until a backoff has passed, then the next callers try again (half-open); a success closes it, a
failure opens it again for twice as long. A store still failing ``give_up`` seconds after it first
failed, or one that refused for good (credentials, permissions, a missing bucket), is off for the
rest of the run: callers go to the next source and nothing is asked of it again.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from .. import log

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 4.0  # a restarting store is usually back within seconds: look often


class Circuit:
    def __init__(self, name: str, give_up: float, clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.give_up = give_up
        self.clock = clock
        self.off = False
        self._opened: float | None = None  # when the current outage began
        self._retry_at = 0.0
        self._failures = 0
        self._cond = threading.Condition()

    @property
    def closed(self) -> bool:
        return not self.off and self._opened is None

    def wait(self) -> bool:
        """Block until the store may be asked (closed, or its backoff is over); False once it is off."""
        with self._cond:
            while not self.off:
                wait = self._retry_at - self.clock() if self._opened is not None else 0.0
                if wait <= 0:
                    return True
                self._cond.wait(wait)
            return False

    def succeeded(self) -> None:
        if self._opened is None:
            return  # the common case, without the lock
        with self._cond:
            if self._opened is not None and not self.off:
                log.info("remote cache reachable again", cache=self.name,
                         after=round(self.clock() - self._opened, 1))
                self._opened, self._failures = None, 0
                self._cond.notify_all()

    def failed(self, error: str) -> None:
        """A transient failure (unreachable, 5xx, SlowDown): open, or stay open for longer."""
        with self._cond:
            if self.off:
                return
            now = self.clock()
            if self._opened is None:
                self._opened = now
                log.warning("remote cache unavailable; continuing without it if it is not back soon",
                            cache=self.name, error=error, retry_for=round(self.give_up, 1))
            self._failures += 1
            if now - self._opened >= self.give_up:
                self.off = True
                log.info("gave up on the remote cache for this run", cache=self.name, error=error,
                         after=round(now - self._opened, 1))
            else:
                backoff = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._failures - 1)) * random.uniform(0.75, 1.0)
                self._retry_at = max(self._retry_at, now + backoff)
            self._cond.notify_all()

    def refused(self, error: str) -> None:
        """The store refused for good: off for the run, with one warning."""
        with self._cond:
            if self.off:
                return
            self.off = True
            self._cond.notify_all()
        log.warning("remote cache unavailable; continuing without it", cache=self.name, error=error)
