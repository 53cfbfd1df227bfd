"""Many small files: per-file overhead rather than bandwidth, seeder against huggingface_hub."""

from __future__ import annotations

import shutil
import sys

from bench.common import SEEDER
from bench.harness import Bench
from bench.measure import Row, timed

HF_SCRIPT = ("import sys\nfrom huggingface_hub import snapshot_download\n"
             "snapshot_download('bench/many', cache_dir=sys.argv[1])")


def small_files(bench: Bench) -> None:
    n = bench.data.many
    manifest = bench.manifest("many", '[[models]]\nname = "many"\nrepo = "bench/many"\n')
    target = bench.work / "out" / "many"
    payload = n * bench.args.small_size
    bench.repeat(Row("small", f"seeder ({n} × {bench.args.small_size // 1024} KiB)", bytes=payload, files=n,
                     note="--jobs 4 (default)"), bench.args.runs,
                 lambda i: timed([*SEEDER, "-m", str(manifest), "-t", str(target), "-q"], env=bench.env,
                                 log=bench.logs / "many.log"), bench.fresh(target))
    if bench.wanted("huggingface_hub"):
        out = bench.work / "out" / "many-hf"
        bench.repeat(Row("small", "huggingface_hub snapshot_download", bytes=payload, files=n,
                         note="8 workers (its default)"), bench.args.runs,
                     lambda i: timed([sys.executable, "-c", HF_SCRIPT, str(out)], env=bench.env,
                                     log=bench.logs / "hf-many.log"), bench.fresh(out))
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
