"""Warm (a second run on an intact target) and verify (hash every file of it): seeder against sha256sum."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.common import EMBEDDING_FILES, SEEDER, VERIFY_ONE_THREAD, first_line
from bench.harness import Bench
from bench.measure import Row, timed


def warm_and_verify(bench: Bench, default: Path, target: Path) -> None:
    log = bench.logs / "seeder.log"
    warm = Row("warm", "seeder (intact target)", files=len(EMBEDDING_FILES) + 1, note="no request, no hashing")
    bench.repeat(warm, max(5, bench.args.runs), lambda i: timed([*SEEDER, "-m", str(default), "-t", str(target)],
                                                                env=bench.env, log=log))
    files = [str(p) for p in sorted((target).glob("*/**/*")) if p.is_file() and ".seeder" not in p.parts]
    runs = max(3, bench.args.runs)
    bench.repeat(Row("verify", "seeder verify", bytes=bench.payload, note="sha256, threads (one per core)"), runs,
                 lambda i: timed([*SEEDER, "verify", "-m", str(default), "-t", str(target)], env=bench.env,
                                 log=log))
    bench.repeat(Row("verify", "seeder verify, 1 thread", bytes=bench.payload, note="verify(jobs=1), same code"),
                 runs, lambda i: timed([sys.executable, "-c", VERIFY_ONE_THREAD, str(default), str(target)],
                                       env=bench.env))
    bench.repeat(Row("verify", "sha256sum", bytes=bench.payload, note=first_line(["sha256sum", "--version"])),
                 runs, lambda i: timed(["sha256sum", *files]))
