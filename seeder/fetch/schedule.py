"""Which bytes each connection of a multi-part download fetches next.

Pieces are handed out in file order, so the completed bytes form a prefix that grows behind the
downloads and can be hashed as it grows; the first round's pieces grow from 1/n of a part to a
whole one so the connections finish one after another; near the end pieces shrink, and an idle
connection takes over half of a stalled part. All state is guarded by :attr:`Schedule.mutex`.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from .partial import gaps, merge

MIN_PIECE = 1 << 20  # the smallest piece: of the first round, and near the end
STEAL_MIN = 2 << 20  # an idle connection takes over half of a part that has at least twice this left,
STALLED = 1.0  # and that has not moved for this many seconds: each take-over costs the bytes the old
# connection already had in flight, so a merely slower connection is left to finish its part
TAIL = 2  # near the end, pieces shrink to 1/(TAIL × connections) of what is left


class Span:
    """One piece in flight: bytes ``[start, pos)`` are written, ``[pos, end)`` are still to come.

    ``[pos, claimed)`` is being written right now; an idle connection may take over ``[mid, end)`` for
    any ``mid >= claimed`` (it lowers ``end``), so the owner must re-read ``end`` before each write.
    """

    __slots__ = ("start", "pos", "end", "claimed", "moved")

    def __init__(self, start: int, end: int):
        self.start = self.pos = self.claimed = start
        self.end = end
        self.moved = time.monotonic()


class Schedule:
    def __init__(self, size: int, part_size: int, connections: int, done: list[list[int]]):
        self.piece = max(1, part_size)
        self.min_piece = min(self.piece, MIN_PIECE)
        self.steal_min = min(self.piece, STEAL_MIN)
        self.mutex = threading.Lock()
        self.changed = threading.Condition(self.mutex)
        self.done = done
        self.active: set[Span] = set()
        self.todo: deque[list[int]] = deque(gaps(done, size))
        self.resumed = sum(b - a for a, b in done)
        self.unassigned = size - self.resumed
        self.handed = 0  # pieces handed out so far
        self.arrived: float | None = None
        self.workers = max(1, min(connections, -(-self.unassigned // self.min_piece)))

    @property
    def finished(self) -> bool:
        return not self.todo and not self.active

    def take(self, stop: threading.Event) -> Span | None:
        """The next piece in file order (so the hashed prefix keeps up), or half of the slowest one's rest."""
        with self.mutex:
            while not self.todo:
                # Idle: wait for a part to stall (then take over half of it) or for all to finish.
                if stop.is_set() or not self.active:
                    return None
                if (span := self._steal()) is not None:
                    return span
                self.changed.wait(STALLED / 4)
            if stop.is_set():
                return None
            head = self.todo[0]
            # The first round grows from 1/n of a piece to a whole one, so the connections finish their
            # pieces one after another, in file order: the hashed prefix then advances steadily, and little
            # is left to hash when the last byte arrives.
            want = min(self.piece, max(self.min_piece, self.unassigned // (TAIL * self.workers)))
            if self.handed < self.workers:
                want = max(self.min_piece, self.piece * (self.handed + 1) // self.workers)
            self.handed += 1
            length = min(want, head[1] - head[0])
            span = Span(head[0], head[0] + length)
            head[0] += length
            if head[0] >= head[1]:
                self.todo.popleft()
            self.unassigned -= length
            self.active.add(span)
            return span

    def _steal(self) -> Span | None:
        # Nothing left to hand out: split the part with the most left (the newest, or a slow or stalled
        # connection's), so all connections stay busy to the end.
        stalled = time.monotonic() - STALLED
        victim = max((s for s in self.active if s.moved < stalled), key=lambda s: (s.end - s.claimed, s.start),
                     default=None)
        if victim is None or victim.end - victim.claimed < 2 * self.steal_min:
            return None
        mid = victim.claimed + (victim.end - victim.claimed) // 2
        span = Span(mid, victim.end)
        victim.end = mid
        self.active.add(span)
        return span

    def finish(self, span: Span) -> None:
        with self.changed:
            self.active.discard(span)
            self.done = merge([*self.done, [span.start, span.end]])
            if not self.todo and not self.active:
                self.arrived = time.monotonic()  # the last byte is in
            self.changed.notify_all()

    def snapshot(self) -> list[list[int]]:
        with self.mutex:
            return merge([*self.done, *([s.start, s.pos] for s in self.active)])
