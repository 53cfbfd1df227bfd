"""The measuring loop shared by every scenario: repeated and interleaved runs, and the rows they fill."""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path

from bench.common import EMBEDDING_FILES, SEEDER, FakeHub, say
from bench.measure import Fleet, Row, timed
from bench.prepare import Data


class Bench:
    def __init__(self, args, work: Path, hub: FakeHub, data: Data, have: dict[str, bool]):
        self.args, self.work, self.hub, self.data = args, work, hub, data
        self.have = have
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.fleets: list[Fleet] = []  # the shared S3 cache's node runs
        self.remarks: dict[str, list[str]] = {}  # group -> lines printed under that group's table
        self.queued: list | None = None
        self.default_manifest: Path | None = None
        self.logs = work / "logs"
        self.logs.mkdir(exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SEEDER_"))}
        self.env.update(HF_ENDPOINT=hub.url, HF_HOME=str(work / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
                        HF_HUB_DISABLE_PROGRESS_BARS="1")
        self.urls = self._peer_urls()
        self.payload = sum(p.stat().st_size for p in data.embedding.values()) + data.llm.stat().st_size

    def wanted(self, name: str) -> bool:
        return not self.args.only or any(key in name for key in self.args.only)

    def commit(self, repo: str) -> str:
        """The commit the server's main branch of ``repo`` names."""
        return self.hub._repos[repo].branches["main"]

    def _peer_urls(self) -> list[tuple[str, str]]:
        commit = self.commit("bench/embedding")
        pairs = [(f"{self.hub.url}/bench/embedding/resolve/{commit}/{name}", f"embedding/{name}")
                 for name in EMBEDDING_FILES]
        pairs.append((f"{self.hub.url}/files/llm.gguf", "llm/llm.gguf"))
        return pairs

    def manifest(self, name: str, text: str, env: dict[str, str] | None = None) -> Path:
        d = self.work / "manifests" / name
        d.mkdir(parents=True, exist_ok=True)
        path = d / "models.toml"
        path.write_text(text)
        sample = timed([*SEEDER, "lock", "-m", str(path), "-q"], env=env or self.env,
                       log=self.logs / f"lock-{name}.log")
        if sample.code:
            raise SystemExit(f"seeder lock failed for {name}: see {self.logs / f'lock-{name}.log'}")
        return path

    def repeat(self, row: Row, runs: int, command, before=None) -> Row:
        """Run ``command(i)`` ``runs`` times (``before(i)`` untimed first); record samples and bytes served.

        Inside :meth:`interleaved`, runs are only queued, then made round-robin with the others queued.
        """
        if self.queued is not None:
            self.queued.append((row, runs, command, before))
            return row
        fetched = [self._once(row, i, runs, command, before) for i in range(runs)]
        return self._close(row, fetched)

    def interleaved(self, body) -> None:
        """Run what ``body()`` queues round by round (every tool once per round), so drift in the machine's
        load (it is shared) spreads evenly over the tools instead of landing on one of them.

        The queued commands run after ``body`` returns: each must close over names bound only once.
        """
        self.queued = []
        try:
            body()
            jobs, self.queued = self.queued, None
        finally:
            self.queued = None
        fetched: dict[int, list[int]] = {id(row): [] for row, *_ in jobs}
        for i in range(max((runs for _, runs, _, _ in jobs), default=0)):
            for row, runs, command, before in jobs:
                if i < runs:
                    fetched[id(row)].append(self._once(row, i, runs, command, before))
        for row, *_ in jobs:
            self._close(row, fetched[id(row)])

    def _once(self, row: Row, i: int, runs: int, command, before) -> int:
        if before:
            before(i)
        self.hub.clear_log()
        sample = command(i)
        deadline = time.monotonic() + 2  # a handler may still be closing its response when the client exits
        while any(r.finished is None for r in self.hub.requests) and time.monotonic() < deadline:
            time.sleep(0.01)
        log = [r for r in self.hub.requests if r.finished is not None]
        if log:
            row.wire.append(max(r.finished for r in log) - min(r.started for r in log))
            row.lead.append(min(r.started for r in log) - sample.started)
        row.samples.append(sample)
        status = "ok" if sample.code == 0 else f"EXIT {sample.code}"
        wire = f"  on the wire {row.wire[-1]:6.3f} s" if log and row.bytes else ""
        say(f"  {row.group:7} {row.name:38} run {i + 1}/{runs}: {sample.seconds:7.3f} s  "
            f"rss {sample.rss_mb:6.1f} MB{wire}  {status}")
        return self.hub.body_bytes()

    def _close(self, row: Row, fetched: list[int]) -> Row:
        row.fetched = int(statistics.median(fetched)) if fetched else None
        self.rows.append(row)
        return row

    def fresh(self, path: Path):
        def clear(_i: int) -> None:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
        return clear
