"""Timing one command: wall clock and peak RSS per run (:class:`Sample`), gathered per measurement (:class:`Row`)."""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import MB


@dataclass
class Sample:
    seconds: float
    rss_mb: float
    code: int
    started: float = 0.0  # time.monotonic() at process start


@dataclass
class Row:
    group: str  # cold, warm, verify, small, rss, docker
    name: str
    samples: list[Sample] = field(default_factory=list)
    bytes: int = 0  # payload, for MB/s
    files: int = 0  # for files/s
    note: str = ""
    fetched: int | None = None  # body bytes the server sent during the runs (median)
    wire: list[float] = field(default_factory=list)  # per run: first request arrived -> last response sent
    lead: list[float] = field(default_factory=list)  # per run: process start -> first request arrived

    @property
    def ok(self) -> bool:
        return bool(self.samples) and all(s.code == 0 for s in self.samples)

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples) if self.samples else float("nan")

    @property
    def spread(self) -> str:
        if len(self.samples) < 2:
            return ""
        times = [s.seconds for s in self.samples]
        return f"{min(times):.2f}–{max(times):.2f}"

    @property
    def rss(self) -> float:
        return max((s.rss_mb for s in self.samples), default=float("nan"))

    @property
    def rate(self) -> float:
        return self.bytes / self.median / MB if self.bytes and self.samples else float("nan")

    @property
    def wire_rate(self) -> float:
        return self.bytes / statistics.median(self.wire) / MB if self.bytes and self.wire else float("nan")


@dataclass
class Fleet:
    """Seeder processes started together against one origin and one bucket prefix (the shared S3 cache)."""

    name: str
    nodes: int
    payload: int  # the set's bytes, per node
    seconds: list[float] = field(default_factory=list)  # per run: first process started -> last one exited
    codes: list[int] = field(default_factory=list)  # every process of every run
    origin: list[int] = field(default_factory=list)  # per run: body bytes the origin sent
    bucket: list[int] = field(default_factory=list)  # per run: bytes read from the bucket (summary events, summed)
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.codes) and all(c == 0 for c in self.codes)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def _peak_rss(pid: int, done: threading.Event, peak: list[int]) -> None:
    # VmHWM of the process's own memory map. (wait4's ru_maxrss would count this benchmark's own memory:
    # a forked child starts with a copy of the parent's page tables, and exec keeps that high-water mark.)
    path = f"/proc/{pid}/status"
    while not done.is_set():
        try:
            with open(path) as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
                        break
        except (OSError, ValueError):
            return
        done.wait(0.01)


def timed(cmd: list[str], *, env: dict | None = None, cwd: Path | None = None, log: Path | None = None) -> Sample:
    """Run ``cmd``; wall time and the peak RSS of the process (sampled every 10 ms from /proc)."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    done, peak = threading.Event(), [0]
    try:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        watcher = threading.Thread(target=_peak_rss, args=(proc.pid, done, peak), daemon=True)
        watcher.start()
        _, status, _usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        done.set()
        watcher.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            out.close()
    return Sample(seconds, peak[0] / 1024, proc.returncode, started)
