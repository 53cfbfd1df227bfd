"""Structured logs: JSON lines for machines, readable lines for people.

structlog (and the rich renderer it pulls in) costs ~200 ms to import, more than
the whole warm path may take, so it is imported on the first event that is not
a plain JSON line; JSON lines are rendered here with the same shape structlog's
JSONRenderer gives.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime, timezone

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

_write_mutex = threading.Lock()  # one line at a time, and never through the live bar
_state = {"json": False, "min_level": 20, "secrets": (), "console": None, "interval": 5.0}


def configure(fmt: str = "auto", verbosity: int = 0, secrets: tuple[str, ...] = (),
              progress_interval: float = 5.0) -> None:
    """``fmt``: auto (JSON unless stderr is a terminal), json or console. ``verbosity``: -1 quiet, 0, 1 verbose.
    ``progress_interval``: seconds between JSON progress events of a file."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    _state.update(
        json=use_json,
        min_level={-1: 30, 0: 20}.get(verbosity, 10),
        secrets=tuple(s for s in secrets if len(s) >= 8),  # shorter is no real secret, and would mangle words
        console=None,
        interval=progress_interval,
    )


def hide(secret: str) -> None:
    """One more value never to print: a secret learnt after :func:`configure` (a registry password or token)."""
    if len(secret) >= 8 and secret not in _state["secrets"]:
        _state["secrets"] = (*_state["secrets"], secret)


def redact(text: str) -> str:
    for secret in _state["secrets"]:
        text = text.replace(secret, "***")
    return text


def _console():
    if _state["console"] is None:
        import structlog

        _state["console"] = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    return _state["console"]


def emit(level: str, event: str, **fields: object) -> None:
    if LEVELS[level] < _state["min_level"]:
        return
    record = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
    record["level"] = level
    record["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if _state["json"]:
        line = json.dumps(record, default=str, ensure_ascii=False)  # file names as written: UTF-8, not \uXXXX
    else:
        line = _console()(None, level, record)
    with _write_mutex:
        if _state.get("bar") is not None:
            _state["bar"].write(redact(line), file=sys.stderr)  # above the live bar, not through it
        else:
            sys.stderr.write(redact(line) + "\n")
            sys.stderr.flush()


def debug(event: str, **fields: object) -> None:
    emit("debug", event, **fields)


def info(event: str, **fields: object) -> None:
    emit("info", event, **fields)


def warning(event: str, **fields: object) -> None:
    emit("warning", event, **fields)


def error(event: str, **fields: object) -> None:
    emit("error", event, **fields)


class Progress:
    """Byte progress of a run: a live bar in a terminal, periodic per-file events in JSON mode."""

    def __init__(self, total: int):
        self.total = total
        self.interval = _state["interval"]
        self._bar = None
        self._moving = threading.Lock()  # the downloads' threads share the bar; tqdm's update is not atomic
        if not _state["json"] and sys.stderr.isatty() and _state["min_level"] <= 20 and total:
            from tqdm import tqdm

            # decimal sizes, like the rate tqdm shows beside them (MB/s): one meaning of "M" on one line
            self._bar = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr)
            _state["bar"] = self._bar

    def file(self, model: str, path: str, size: int) -> FileProgress:
        return FileProgress(self, model, path, size)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            with self._moving:
                self._bar.update(n)

    def carry(self, n: int) -> None:
        """Move the bar by ``n`` bytes this run did not transfer: found on disk, or (negative) dropped by a
        restart. They count in neither the rate nor the ETA."""
        bar = self._bar
        if bar is not None:
            with self._moving:
                # tqdm's rate is the bytes between two readings (n - last_print_n, smoothed), and before its
                # first reading n - initial over the time elapsed: moving all three leaves both to this run.
                bar.n += n
                bar.last_print_n += n
                bar.initial += n

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            _state["bar"] = None


class FileProgress:
    def __init__(self, run: Progress, model: str, path: str, size: int):
        self.run, self.model, self.path, self.size = run, model, path, size
        self.done = 0
        self.started = self.last = time.monotonic()
        self.carried = 0  # of done, what this run did not transfer

    def resumed_at(self, offset: int) -> None:
        """Bytes already on disk count as done, so the bar ends at 100 % (it goes back on a restart); the rate
        counts only what this run transfers."""
        self.run.carry(offset - self.done)
        # By the change, not the offset: a retry resumes at what this run itself fetched before the drop.
        self.carried += offset - self.done
        self.done = offset

    def update(self, n: int) -> None:
        self.done += n
        self.run.advance(n)
        now = time.monotonic()
        if _state["json"] and now - self.last >= self.run.interval:
            self.last = now
            rate = (self.done - self.carried) / max(now - self.started, 1e-6)
            eta = (self.size - self.done) / rate if rate > 0 else None
            info("progress", model=self.model, file=self.path, bytes=self.done, total=self.size,
                 rate=round(rate), eta=None if eta is None else round(eta, 1))
