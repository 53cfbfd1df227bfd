"""Memory: peak RSS seeding one large file (256 MiB, then 1 GiB), with aria2c's time on the same file."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.common import SEEDER
from bench.harness import Bench
from bench.measure import Row, timed
from bench.prepare import url_model


def memory(bench: Bench) -> None:
    for label, path in bench.data.big.items():
        manifest = bench.manifest(f"big-{path.stat().st_size}", url_model("big", f"{bench.hub.url}/files/{path.name}",
                                                                          path))
        bench.interleaved(lambda: _one_big(bench, label, path, manifest))
        shutil.rmtree(bench.work / "out" / "big", ignore_errors=True)
        shutil.rmtree(bench.work / "out" / "big-aria2c", ignore_errors=True)


def _one_big(bench: Bench, label: str, path: Path, manifest: Path) -> None:
    size = path.stat().st_size
    target = bench.work / "out" / "big"
    bench.repeat(Row("rss", f"seeder, one {label} file", bytes=size, note=f"{bench.args.connections} connections"),
                 2, lambda i: timed([*SEEDER, "-m", str(manifest), "-t", str(target), "-q"],
                                    env={**bench.env, "SEEDER_CONNECTIONS": str(bench.args.connections)},
                                    log=bench.logs / "big.log"), bench.fresh(target))
    if bench.have.get("aria2c") and bench.wanted("aria2c"):
        out = bench.work / "out" / "big-aria2c"
        cmd = ["aria2c", "-x", "8", "-s", "8", "-q", "--file-allocation=falloc", "-d", str(out),
               "-o", path.name, f"{bench.hub.url}/files/{path.name}"]
        bench.repeat(Row("rss", f"aria2c -x 8 -s 8, one {label} file", bytes=size,
                         note="the same file, for comparison"), 2,
                     lambda i: timed(cmd, log=bench.logs / "aria2c.log"), bench.fresh(out))
