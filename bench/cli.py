"""The command line: flags, the work directory, the server, the scenarios in order, and the report."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import bench
from bench.common import (DEFAULT_MULTIPART_MIN, DEFAULT_PART_SIZE, EMBEDDING_FILES, LLM_SIZE, MB, ROOT,
                          SEEDER_SOURCE, FakeHub, MiB, load_dir, say)
from bench.harness import Bench
from bench.page import splice
from bench.prepare import Data, disk_write_speed, ensure_tools, generate, url_model
from bench.report import chart, machine, report, targets
from bench.scenarios.cold import cold_and_peers
from bench.scenarios.docker import docker
from bench.scenarios.hfcache import hf_cache
from bench.scenarios.oci import oci
from bench.scenarios.memory import memory
from bench.scenarios.s3 import shared_s3
from bench.scenarios.small import small_files
from bench.scenarios.warm import warm_and_verify

SCENARIOS = ("s3", "hf-cache", "oci")  # --only names that select a part of the benchmark rather than a peer


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    doc = bench.__doc__
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    p.add_argument("--runs", type=int, default=3, help="runs per measurement (median reported; default 3)")
    p.add_argument("--per-conn", type=float, default=50, metavar="MB/s", help="cap per connection (default 50)")
    p.add_argument("--link", type=float, default=None, metavar="MB/s",
                   help="cap on all connections together (default 8 × --per-conn; 0: none)")
    p.add_argument("--connections", type=int, default=8, help="seeder's connections per file (default 8)")
    p.add_argument("--scale", type=float, default=1.0, help="scale the default set's sizes (e.g. 0.25 for a quick run)")
    p.add_argument("--small-files", type=int, default=2000)
    p.add_argument("--small-size", type=int, default=4096)
    p.add_argument("--no-rss", dest="rss", action="store_false", help="skip the 256 MiB / 1 GiB memory runs")
    p.add_argument("--no-docker", dest="docker", action="store_false", help="skip docker compose build")
    p.add_argument("--no-small", dest="small", action="store_false", help="skip the many-small-files runs")
    p.add_argument("--no-s3", dest="s3", action="store_false", help="skip the shared S3 cache (SeaweedFS) runs")
    p.add_argument("--no-hf-cache", dest="hf_cache", action="store_false",
                   help="skip filling an HF cache (seeder's hf-cache layout vs snapshot_download)")
    p.add_argument("--no-oci", dest="oci", action="store_false",
                   help="skip the OCI registry part (pull and push 1 GiB: seeder vs oras-py and skopeo)")
    p.add_argument("--only", type=lambda s: [x for x in s.split(",") if x], default=None,
                   help="comma-separated peers to run besides seeder (wget,curl,aria2c,huggingface_hub) and "
                        "parts (s3: the shared S3 cache; hf-cache: filling an HF cache; oci: a registry); naming parts "
                        "only runs only them, and writes only their sections into --out; a part runs with --only "
                        "only when named")
    p.add_argument("--no-install", dest="install", action="store_false", help="never apt-get/pip install")
    p.add_argument("--workdir", type=Path, default=None, help="where to generate files (default: a temp dir in /tmp)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--no-write", dest="write", action="store_false", help="print only; leave docs/ alone")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    args = p.parse_args(argv)
    args.s3 = args.s3 and (not args.only or "s3" in args.only)
    args.hf_cache = args.hf_cache and (not args.only or "hf-cache" in args.only)
    args.oci = args.oci and (not args.only or "oci" in args.only)
    args.core = not args.only or any(name not in SCENARIOS for name in args.only)  # cold, warm, verify and the rest
    if not args.core:
        args.small = args.rss = args.docker = False
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    link = args.per_conn * 8 if args.link is None else args.link
    base = args.workdir or Path(tempfile.gettempdir())
    if not _enough_space(base, args):
        return 2
    work = Path(tempfile.mkdtemp(prefix="seeder-bench-", dir=base))
    say(f"work directory: {work}")
    have = ensure_tools(args.install)
    # Byte-compile seeder as an installed package is, so no timed run pays for compiling an edited module.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(SEEDER_SOURCE)], capture_output=True)
    started = time.monotonic()
    try:
        disk = disk_write_speed(work)
        say(f"disk: {disk:.0f} MB/s sequential write (fdatasync)")
        say("generating content ...")
        data = generate(work / "data", args)
        run = _measure(args, work, data, have, link)
        for tool, ok in have.items():
            if not ok and args.core:  # only the core runs compare with wget, curl and aria2c
                run.notes.append(f"{tool} is not installed: its row is missing.")
        info = machine(work, disk)
        settings = _settings(args, link, run, data, started)
        _publish(run, args, work, info, settings, targets(run, link or float("inf"), disk))
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _enough_space(base: Path, args) -> bool:
    base.mkdir(parents=True, exist_ok=True)
    say(subprocess.run(["df", "-h", str(base)], capture_output=True, text=True).stdout.strip())
    set_bytes = (EMBEDDING_FILES["model.safetensors"] + LLM_SIZE) * args.scale
    need = int(set_bytes * 4 + (1280 * MiB * 2 if args.rss else 0)
               + (5 << 30 if args.s3 else 0)  # the 1 GiB blob, its copy in the bucket, two readers; the node runs
               + (set_bytes * 2 if args.hf_cache else 0)  # seeder's HF_HOME and the peer's, side by side
               + (6 << 30 if args.oci else 0))  # the blob, a seeded copy, the registry's, three pulls
    free = shutil.disk_usage(base).free
    if free < need:
        say(f"not enough space in {base}: need about {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free")
        return False
    return True


def _measure(args, work: Path, data: Data, have: dict[str, bool], link: float) -> Bench:
    hub = FakeHub()
    hub.zero_copy = True
    hub.throttle_bps = int(args.per_conn * MB) or None
    hub.throttle_total_bps = int(link * MB) or None
    load_dir(hub, data.root)
    with hub:
        run = Bench(args, work, hub, data, have)
        embedding = '[[models]]\nname = "embedding"\nrepo = "bench/embedding"\n\n'
        run.default_manifest = run.manifest(
            "default", embedding + url_model("llm", f"{hub.url}/files/llm.gguf", data.llm))
        say(f"server {hub.url}: {args.per_conn:g} MB/s per connection, link {link:g} MB/s")
        if args.core:
            target = cold_and_peers(run, run.default_manifest)
            run.interleaved(lambda: warm_and_verify(run, run.default_manifest, target))
            shutil.rmtree(target, ignore_errors=True)
        if args.small:
            small_files(run)
        if args.rss:
            memory(run)
        if args.hf_cache:
            hf_cache(run)
        if args.oci:
            oci(run)
        if args.docker:
            docker(run)
        if args.s3:
            shared_s3(run)
    return run


def _settings(args, link: float, run: Bench, data: Data, started: float) -> dict[str, str]:
    return {
        "Server caps": f"{args.per_conn:g} MB/s per connection, {link:g} MB/s for all connections together"
                       if link else f"{args.per_conn:g} MB/s per connection, no link cap",
        "Default set": f"{run.payload / MB:.0f} MB: {len(EMBEDDING_FILES)} repo files "
                       f"({data.embedding['model.safetensors'].stat().st_size / MB:.1f} MB safetensors) "
                       f"+ {data.llm.stat().st_size / MB:.1f} MB GGUF by URL",
        "seeder": f"{args.connections} connections per file, {DEFAULT_PART_SIZE >> 20} MiB parts, files of "
                  f"{DEFAULT_MULTIPART_MIN >> 20} MiB or more in parts, --jobs 4 (defaults); models.lock present",
        "Runs": f"{args.runs} per cold measurement (median), more for warm/verify",
        "Duration of this benchmark": f"{(time.monotonic() - started) / 60:.1f} min",
    }


def _publish(run: Bench, args, work: Path, info: dict[str, str], settings: dict[str, str], checks) -> None:
    if args.write and not args.core and args.out.exists():
        _publish_part(run, args, work, info, settings, checks)
        return
    png = args.out.with_suffix(".png") if args.write else None
    if png is not None and (why := chart(run, png)):
        run.notes.append(why)
    if args.write:
        text = report(run, info, settings, checks, args.out, png)
    else:
        text = report(run, info, settings, checks, work / "benchmarks.md", None)
    say("\n" + text)
    if args.write:
        say(f"wrote {args.out}" + (f" and {png}" if png and png.exists() else ""))


def _publish_part(run: Bench, args, work: Path, info: dict[str, str], settings: dict[str, str], checks) -> None:
    """Only the parts named with --only: their sections go into the page, the rest of it stays (bench.page)."""
    text = report(run, info, settings, checks, work / "benchmarks.md", None)
    say("\n" + text)
    runs = f"{args.runs} run" + ("s" if args.runs != 1 else "")
    stamp = (f"Measured on its own (`python -m bench --only {','.join(args.only)}`) on "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: {runs} per row, server caps {settings['Server caps']}; "
             f"{info['CPU']}; {info['Disk']}.")
    page = splice(args.out.read_text(), text, stamp)
    if page is None:
        say(f"nothing measured: {args.out} left as it was")
        return
    args.out.write_text(page)
    say(f"wrote the sections of {', '.join(args.only)} into {args.out}; the rest of it is unchanged")
