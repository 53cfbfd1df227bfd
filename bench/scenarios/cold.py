"""Cold: the default set onto an empty target, seeder against wget, curl, aria2c and huggingface_hub."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

from bench.common import EMBEDDING_FILES, SEEDER, first_line
from bench.harness import Bench
from bench.measure import Row, timed

HF_SCRIPT = textwrap.dedent("""
    import sys, threading
    from huggingface_hub import hf_hub_download, snapshot_download
    out = sys.argv[1]
    t = threading.Thread(target=snapshot_download, args=("bench/embedding",), kwargs={"cache_dir": out})
    t.start()
    hf_hub_download("bench/llm", "llm.gguf", cache_dir=out)
    t.join()
""")


def cold_and_peers(bench: Bench, default: Path) -> Path:
    target = bench.work / "out" / "seeder"
    bench.interleaved(lambda: _cold(bench, default, target))
    shutil.rmtree(bench.work / "out" / "peer", ignore_errors=True)
    shutil.rmtree(bench.work / "out" / "seeder-1", ignore_errors=True)
    # Leave a seeded target for the warm and verify runs.
    shutil.rmtree(target, ignore_errors=True)
    env = {**bench.env, "SEEDER_CONNECTIONS": str(bench.args.connections)}
    timed([*SEEDER, "-m", str(default), "-t", str(target), "-q"], env=env, log=bench.logs / "seeder.log")
    return target


def _cold(bench: Bench, default: Path, target: Path) -> None:
    _seeder(bench, default, target)
    out = bench.work / "out" / "peer"
    if bench.have.get("wget") and bench.wanted("wget"):
        _wget(bench, out)
    if bench.have.get("curl") and bench.wanted("curl"):
        _curl(bench, out)
    if bench.have.get("aria2c") and bench.wanted("aria2c"):
        _aria2c(bench, out)
    if bench.wanted("huggingface_hub"):
        _huggingface_hub(bench, out)


def _seeder(bench: Bench, default: Path, target: Path) -> None:
    args, runs = bench.args, bench.args.runs
    log = bench.logs / "seeder.log"
    cold = Row("cold", "seeder", bytes=bench.payload, files=len(EMBEDDING_FILES) + 1,
               note=f"{args.connections} connections per file")
    env = {**bench.env, "SEEDER_CONNECTIONS": str(args.connections)}
    bench.repeat(cold, runs, lambda i: timed([*SEEDER, "-m", str(default), "-t", str(target), "-q"], env=env,
                                             log=log), bench.fresh(target))
    if bench.wanted("seeder, 1 connection"):
        one = bench.work / "out" / "seeder-1"
        bench.repeat(Row("cold", "seeder, 1 connection", bytes=bench.payload, note="SEEDER_CONNECTIONS=1"), runs,
                     lambda i: timed([*SEEDER, "-m", str(default), "-t", str(one), "-q"],
                                     env={**bench.env, "SEEDER_CONNECTIONS": "1"}, log=log), bench.fresh(one))


def _wget(bench: Bench, out: Path) -> None:
    wget_list = bench.work / "wget-urls.txt"
    wget_list.write_text("".join(u + "\n" for u, _ in bench.urls))
    wget_cmd = ["wget", "-nv", "-x", "-nH", "-P", str(out), "-i", str(wget_list)]
    bench.repeat(Row("cold", "wget", bytes=bench.payload, note="-i list: one connection, file after file"),
                 bench.args.runs, lambda i: timed(wget_cmd, log=bench.logs / "wget.log"), bench.fresh(out))


def _curl(bench: Bench, out: Path) -> None:
    curl_cmd = ["curl", "-sS", "--fail", "--create-dirs"]
    for url, path in bench.urls:
        curl_cmd += ["-o", str(out / path), url]
    bench.repeat(Row("cold", "curl", bytes=bench.payload, note="one invocation, file after file"), bench.args.runs,
                 lambda i: timed(curl_cmd, log=bench.logs / "curl.log"), bench.fresh(out))


def _aria2c(bench: Bench, out: Path) -> None:
    aria_list = bench.work / "aria2-input.txt"
    aria_list.write_text("".join(f"{u}\n  out={p}\n" for u, p in bench.urls))
    aria_cmd = ["aria2c", "-x", "8", "-s", "8", "-q", "--file-allocation=falloc", "--allow-overwrite=true",
                "--auto-file-renaming=false", "-d", str(out), "-i", str(aria_list)]
    bench.repeat(Row("cold", "aria2c -x 8 -s 8", bytes=bench.payload,
                     note="--file-allocation=falloc; default -j 5 (files at once)"), bench.args.runs,
                 lambda i: timed(aria_cmd, log=bench.logs / "aria2c.log"), bench.fresh(out))


def _huggingface_hub(bench: Bench, out: Path) -> None:
    version = first_line([sys.executable, "-c", "import huggingface_hub; print(huggingface_hub.__version__)"])
    bench.repeat(Row("cold", "huggingface_hub", bytes=bench.payload,
                     note=f"{version}: snapshot_download + hf_hub_download, in parallel"), bench.args.runs,
                 lambda i: timed([sys.executable, "-c", HF_SCRIPT, str(out)], env=bench.env,
                                 log=bench.logs / "hf.log"), bench.fresh(out))
