#!/usr/bin/env python3
"""seeder's benchmark: cold, warm and verify against wget, curl, aria2c, huggingface_hub and sha256sum.

    .venv/bin/python bench/run.py                 # everything; writes docs/benchmarks.md and docs/benchmarks.png
    .venv/bin/python bench/run.py --runs 1 --only seeder,aria2c --no-write   # a quick look

A local server on 127.0.0.1 (tests/fakehub.py: the fake Hugging Face hub, in this process) serves the
hub API, repo files and plain URLs, capping every connection (default 50 MB/s) and, like the link
behind a CDN, all connections together (default 8 x the per-connection cap). Content is generated
(random bytes, so no layer can compress or deduplicate it) in the sizes of the default manifest: a
~91 MB safetensors repo plus its small files, and a ~669 MB GGUF by URL. Every tool fetches the same
files; each timing is the median of --runs runs (wall clock, process start to exit). See
docs/benchmarks.md for what each row means.

Needs: wget, curl, aria2 (Debian packages: installed with apt-get when missing and root), matplotlib
(for the chart: pip-installed into this interpreter when missing). Docker and the repository's
Dockerfile + docker-compose.yml are optional: without them that part is skipped with a note.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seeder.config import DEFAULT_MULTIPART_MIN, DEFAULT_PART_SIZE  # noqa: E402
from tests.fakehub import FakeHub, load_dir  # noqa: E402

MB = 1_000_000
MiB = 1 << 20
# The default manifest's sizes: all-MiniLM-L6-v2's files and TinyLlama's Q4_K_M GGUF.
EMBEDDING_FILES = {
    "model.safetensors": 90_868_376,
    "tokenizer.json": 466_247,
    "vocab.txt": 231_508,
    "config.json": 612,
    "tokenizer_config.json": 350,
    "special_tokens_map.json": 112,
    "sentence_bert_config.json": 53,
    "modules.json": 349,
    "config_sentence_transformers.json": 116,
    "1_Pooling/config.json": 190,
}
LLM_SIZE = 668_788_096
SEEDER = [sys.executable, "-m", "seeder"]


# -- running things --------------------------------------------------------------------------------------


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


def say(*parts: object) -> None:
    print(*parts, flush=True)


def first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "not available"


# -- setup -----------------------------------------------------------------------------------------------


def ensure_tools(install: bool) -> dict[str, bool]:
    wanted = {"wget": "wget", "curl": "curl", "aria2c": "aria2"}
    missing = [pkg for tool, pkg in wanted.items() if not shutil.which(tool)]
    if missing and install and shutil.which("apt-get") and os.geteuid() == 0:
        say(f"installing {' '.join(missing)} with apt-get ...")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True)
    have = {tool: bool(shutil.which(tool)) for tool in wanted}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if install:
            say("installing matplotlib (for the chart) ...")
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib>=3.8"], capture_output=True)
    return have


def write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, 8 * MiB)
            fh.write(os.urandom(n))
            left -= n


def disk_write_speed(directory: Path, size: int = 512 * MiB) -> float:
    """MB/s writing ``size`` bytes and fdatasync-ing them (what the disk sustains, not the page cache)."""
    path = directory / "disk-speed.tmp"
    block = os.urandom(8 * MiB)
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(size // len(block)):
            os.write(fd, block)
        os.fdatasync(fd)
    finally:
        os.close(fd)
        elapsed = time.perf_counter() - started
        path.unlink()
    return size / elapsed / MB


@dataclass
class Data:
    root: Path
    embedding: dict[str, Path]
    llm: Path
    many: int
    big: dict[str, Path]


def generate(root: Path, args) -> Data:
    repos = root / "repos" / "bench"
    emb = {name: repos / "embedding" / name for name in EMBEDDING_FILES}
    for name, size in EMBEDDING_FILES.items():
        write_random(emb[name], int(size * args.scale))
    llm = root / "files" / "llm.gguf"
    write_random(llm, int(LLM_SIZE * args.scale))
    # The same GGUF in a repo too: huggingface_hub downloads repo files, not plain URLs.
    (repos / "llm").mkdir(parents=True, exist_ok=True)
    os.link(llm, repos / "llm" / "llm.gguf")
    many = repos / "many"
    for i in range(args.small_files):
        path = many / f"d{i // 250:02d}" / f"f{i:05d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(args.small_size))
    big = {}
    for label, size in (("256 MiB", 256 * MiB), ("1 GiB", 1024 * MiB)):
        if args.rss:
            big[label] = root / "files" / f"big-{size // MiB}m.bin"
            write_random(big[label], size)
    return Data(root, emb, llm, args.small_files, big)


def url_model(name: str, url: str, path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(8 * MiB):
            digest.update(block)
    return (f'[[models]]\nname = "{name}"\nurl = "{url}"\nsha256 = "{digest.hexdigest()}"\n'
            f"size = {path.stat().st_size}\n\n")


# -- the benchmark ---------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args, work: Path, hub: FakeHub, data: Data):
        self.args, self.work, self.hub, self.data = args, work, hub, data
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.queued: list | None = None
        self.logs = work / "logs"
        self.logs.mkdir(exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SEEDER_"))}
        self.env.update(HF_ENDPOINT=hub.url, HF_HOME=str(work / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
                        HF_HUB_DISABLE_PROGRESS_BARS="1")
        self.urls = self._peer_urls()
        self.payload = sum(p.stat().st_size for p in data.embedding.values()) + data.llm.stat().st_size

    def wanted(self, name: str) -> bool:
        return not self.args.only or any(key in name for key in self.args.only)

    def _peer_urls(self) -> list[tuple[str, str]]:
        commit = self.hub._repos["bench/embedding"].branches["main"]
        pairs = [(f"{self.hub.url}/bench/embedding/resolve/{commit}/{name}", f"embedding/{name}")
                 for name in EMBEDDING_FILES]
        pairs.append((f"{self.hub.url}/files/llm.gguf", "llm/llm.gguf"))
        return pairs

    def manifest(self, name: str, text: str) -> Path:
        d = self.work / "manifests" / name
        d.mkdir(parents=True, exist_ok=True)
        path = d / "models.toml"
        path.write_text(text)
        sample = timed([*SEEDER, "lock", "-m", str(path), "-q"], env=self.env, log=self.logs / f"lock-{name}.log")
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

    # -- scenarios --

    def cold_and_peers(self, default: Path) -> Path:
        target = self.work / "out" / "seeder"
        self.interleaved(lambda: self._cold(default, target))
        shutil.rmtree(self.work / "out" / "peer", ignore_errors=True)
        shutil.rmtree(self.work / "out" / "seeder-1", ignore_errors=True)
        # Leave a seeded target for the warm and verify runs.
        shutil.rmtree(target, ignore_errors=True)
        env = {**self.env, "SEEDER_CONNECTIONS": str(self.args.connections)}
        timed([*SEEDER, "-m", str(default), "-t", str(target), "-q"], env=env, log=self.logs / "seeder.log")
        return target

    def _cold(self, default: Path, target: Path) -> None:
        args, runs = self.args, self.args.runs
        log = self.logs / "seeder.log"
        cold = Row("cold", "seeder", bytes=self.payload, files=len(EMBEDDING_FILES) + 1,
                   note=f"{args.connections} connections per file")
        env = {**self.env, "SEEDER_CONNECTIONS": str(args.connections)}
        self.repeat(cold, runs, lambda i: timed([*SEEDER, "-m", str(default), "-t", str(target), "-q"], env=env,
                                                log=log), self.fresh(target))
        if self.wanted("seeder, 1 connection"):
            one = self.work / "out" / "seeder-1"
            self.repeat(Row("cold", "seeder, 1 connection", bytes=self.payload, note="SEEDER_CONNECTIONS=1"), runs,
                        lambda i: timed([*SEEDER, "-m", str(default), "-t", str(one), "-q"],
                                        env={**self.env, "SEEDER_CONNECTIONS": "1"}, log=log), self.fresh(one))
        out = self.work / "out" / "peer"
        if self.have.get("wget") and self.wanted("wget"):
            wget_list = self.work / "wget-urls.txt"
            wget_list.write_text("".join(u + "\n" for u, _ in self.urls))
            wget_cmd = ["wget", "-nv", "-x", "-nH", "-P", str(out), "-i", str(wget_list)]
            self.repeat(Row("cold", "wget", bytes=self.payload, note="-i list: one connection, file after file"),
                        runs, lambda i: timed(wget_cmd, log=self.logs / "wget.log"), self.fresh(out))
        if self.have.get("curl") and self.wanted("curl"):
            curl_cmd = ["curl", "-sS", "--fail", "--create-dirs"]
            for url, path in self.urls:
                curl_cmd += ["-o", str(out / path), url]
            self.repeat(Row("cold", "curl", bytes=self.payload, note="one invocation, file after file"), runs,
                        lambda i: timed(curl_cmd, log=self.logs / "curl.log"), self.fresh(out))
        if self.have.get("aria2c") and self.wanted("aria2c"):
            aria_list = self.work / "aria2-input.txt"
            aria_list.write_text("".join(f"{u}\n  out={p}\n" for u, p in self.urls))
            aria_cmd = ["aria2c", "-x", "8", "-s", "8", "-q", "--file-allocation=falloc", "--allow-overwrite=true",
                        "--auto-file-renaming=false", "-d", str(out), "-i", str(aria_list)]
            self.repeat(Row("cold", "aria2c -x 8 -s 8", bytes=self.payload,
                            note="--file-allocation=falloc; default -j 5 (files at once)"), runs,
                        lambda i: timed(aria_cmd, log=self.logs / "aria2c.log"), self.fresh(out))
        if self.wanted("huggingface_hub"):
            script = textwrap.dedent("""
                import sys, threading
                from huggingface_hub import hf_hub_download, snapshot_download
                out = sys.argv[1]
                t = threading.Thread(target=snapshot_download, args=("bench/embedding",), kwargs={"cache_dir": out})
                t.start()
                hf_hub_download("bench/llm", "llm.gguf", cache_dir=out)
                t.join()
            """)
            version = first_line([sys.executable, "-c", "import huggingface_hub; print(huggingface_hub.__version__)"])
            self.repeat(Row("cold", "huggingface_hub", bytes=self.payload,
                            note=f"{version}: snapshot_download + hf_hub_download, in parallel"), runs,
                        lambda i: timed([sys.executable, "-c", script, str(out)], env=self.env,
                                        log=self.logs / "hf.log"), self.fresh(out))

    def warm_and_verify(self, default: Path, target: Path) -> None:
        log = self.logs / "seeder.log"
        warm = Row("warm", "seeder (intact target)", files=len(EMBEDDING_FILES) + 1, note="no request, no hashing")
        self.repeat(warm, max(5, self.args.runs), lambda i: timed([*SEEDER, "-m", str(default), "-t", str(target)],
                                                                  env=self.env, log=log))
        files = [str(p) for p in sorted((target).glob("*/**/*")) if p.is_file() and ".seeder" not in p.parts]
        runs = max(3, self.args.runs)
        self.repeat(Row("verify", "seeder verify", bytes=self.payload, note="sha256, threads (one per core)"), runs,
                    lambda i: timed([*SEEDER, "verify", "-m", str(default), "-t", str(target)], env=self.env,
                                    log=log))
        one = textwrap.dedent("""
            import sys
            from pathlib import Path
            from seeder.seed import obtain_lock
            from seeder.manifest import load
            from seeder.store import Target
            from seeder.verify import verify
            target = Target(Path(sys.argv[2]))
            lock = obtain_lock(load(Path(sys.argv[1])), target, locked=True, net=None)
            sys.exit(1 if verify(target, lock, jobs=1) else 0)
        """)
        self.repeat(Row("verify", "seeder verify, 1 thread", bytes=self.payload, note="verify(jobs=1), same code"),
                    runs, lambda i: timed([sys.executable, "-c", one, str(default), str(target)], env=self.env))
        self.repeat(Row("verify", "sha256sum", bytes=self.payload, note=first_line(["sha256sum", "--version"])),
                    runs, lambda i: timed(["sha256sum", *files]))

    def small_files(self) -> None:
        n = self.data.many
        manifest = self.manifest("many", '[[models]]\nname = "many"\nrepo = "bench/many"\n')
        target = self.work / "out" / "many"
        payload = n * self.args.small_size
        self.repeat(Row("small", f"seeder ({n} × {self.args.small_size // 1024} KiB)", bytes=payload, files=n,
                        note="--jobs 4 (default)"), self.args.runs,
                    lambda i: timed([*SEEDER, "-m", str(manifest), "-t", str(target), "-q"], env=self.env,
                                    log=self.logs / "many.log"), self.fresh(target))
        if self.wanted("huggingface_hub"):
            out = self.work / "out" / "many-hf"
            script = ("import sys\nfrom huggingface_hub import snapshot_download\n"
                      "snapshot_download('bench/many', cache_dir=sys.argv[1])")
            self.repeat(Row("small", "huggingface_hub snapshot_download", bytes=payload, files=n,
                            note="8 workers (its default)"), self.args.runs,
                        lambda i: timed([sys.executable, "-c", script, str(out)], env=self.env,
                                        log=self.logs / "hf-many.log"), self.fresh(out))
            shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)

    def memory(self) -> None:
        for label, path in self.data.big.items():
            manifest = self.manifest(f"big-{path.stat().st_size}", url_model("big", f"{self.hub.url}/files/{path.name}",
                                                                             path))
            self.interleaved(lambda: self._one_big(label, path, manifest))
            shutil.rmtree(self.work / "out" / "big", ignore_errors=True)
            shutil.rmtree(self.work / "out" / "big-aria2c", ignore_errors=True)

    def _one_big(self, label: str, path: Path, manifest: Path) -> None:
        size = path.stat().st_size
        target = self.work / "out" / "big"
        self.repeat(Row("rss", f"seeder, one {label} file", bytes=size, note=f"{self.args.connections} connections"),
                    2, lambda i: timed([*SEEDER, "-m", str(manifest), "-t", str(target), "-q"],
                                       env={**self.env, "SEEDER_CONNECTIONS": str(self.args.connections)},
                                       log=self.logs / "big.log"), self.fresh(target))
        if self.have.get("aria2c") and self.wanted("aria2c"):
            out = self.work / "out" / "big-aria2c"
            cmd = ["aria2c", "-x", "8", "-s", "8", "-q", "--file-allocation=falloc", "-d", str(out),
                   "-o", path.name, f"{self.hub.url}/files/{path.name}"]
            self.repeat(Row("rss", f"aria2c -x 8 -s 8, one {label} file", bytes=size,
                            note="the same file, for comparison"), 2,
                        lambda i: timed(cmd, log=self.logs / "aria2c.log"), self.fresh(out))

    def docker(self) -> None:
        why = self._docker_unavailable()
        if why:
            self.notes.append(f"`docker compose build`: skipped ({why}).")
            say(f"docker: skipped ({why})")
            return
        ctx = self.work / "docker-ctx"
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True)
        for name in listed.stdout.decode().split("\0"):
            src = ROOT / name
            if not name or not src.is_file() or name.startswith(("models/", "docs/", "bench/")):
                continue
            (ctx / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, ctx / name)
        mdir = ctx / "bench-manifest"
        mdir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.default_manifest, mdir / "models.toml")
        shutil.copy2(self.default_manifest.with_name("models.lock"), mdir / "models.lock")
        project = f"seederbench{os.getpid()}"
        # Our own cache mount id and a marker in the seeding step: the benchmark neither reuses nor fills the
        # models cache of anyone else's builds, and can delete exactly its own build cache afterwards.
        dockerfile = ctx / "Dockerfile"
        text = dockerfile.read_text()
        marked = text.replace("id=seeder-models", f"id={project}").replace(
            "seeder seed --cache", f"SEEDER_BENCH={project} seeder seed --cache")
        if marked == text:
            self.notes.append("Docker: the Dockerfile has no `id=seeder-models` cache mount; built as is.")
        dockerfile.write_text(marked)
        (ctx / "bench.compose.yml").write_text(textwrap.dedent(f"""\
            services:
              app:
                image: {project}-app
                build:
                  network: host
                  args:
                    HF_ENDPOINT: {self.hub.url}
                    MANIFEST_DIR: bench-manifest
        """))
        compose = ["docker", "compose", "-p", project, "-f", "docker-compose.yml", "-f", "bench.compose.yml"]
        env = {**os.environ, "HF_TOKEN_FILE": "/dev/null"}
        log = self.logs / "docker.log"
        app_files = sorted((ctx / "app").rglob("*.py"))

        def change_app(i: int) -> None:
            with open(app_files[0], "a") as fh:
                fh.write(f"\n# benchmark edit {i} {time.time()}\n")

        cold = self.repeat(Row("docker", "compose build app: cold", note="--no-cache; models not in the cache mount"),
                           1, lambda i: timed([*compose, "build", "--no-cache", "app"], env=env, cwd=ctx, log=log))
        if cold.ok:
            self.repeat(Row("docker", "compose build app: warm", note="after an edit in app/ only"),
                        max(2, min(3, self.args.runs)),
                        lambda i: timed([*compose, "build", "app"], env=env, cwd=ctx, log=log), change_app)
        else:
            self.notes.append(f"`docker compose build` failed (see {log}); the warm build was not timed.")
        subprocess.run(["docker", "image", "rm", "-f", f"{project}-app"], capture_output=True)
        self._prune_build_cache(project)

    @staticmethod
    def _prune_build_cache(marker: str) -> None:
        """Delete the build cache records (layers, cache mount) whose description names this benchmark."""
        out = subprocess.run(["docker", "buildx", "du", "--verbose"], capture_output=True, text=True).stdout
        ids = []
        for record in out.split("\n\n"):
            fields = dict(line.split(":", 1) for line in record.splitlines() if ":" in line)
            if marker in fields.get("Description", "") and fields.get("ID"):
                ids.append(fields["ID"].strip())
        for record_id in ids:
            subprocess.run(["docker", "buildx", "prune", "-f", "--filter", f"id={record_id}"], capture_output=True)

    def _docker_unavailable(self) -> str | None:
        if not (ROOT / "Dockerfile").is_file() or not (ROOT / "docker-compose.yml").is_file():
            return "no Dockerfile and docker-compose.yml in the repository yet"
        if not shutil.which("docker"):
            return "no docker CLI"
        if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
            return "no Docker engine reachable (bash ../shared/dockerenv/up starts one)"
        if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
            return "no docker compose plugin"
        return None


# -- report ----------------------------------------------------------------------------------------------


def machine(work: Path, disk_mbps: float) -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    flags = Path("/proc/cpuinfo").read_text()
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    fs = subprocess.run(["df", "-hT", str(work)], capture_output=True, text=True).stdout.splitlines()[-1].split()
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores" + (" (SHA extensions)" if " sha_ni" in flags else ""),
        "Memory": f"{mem / 1024 / 1024:.0f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Disk": f"{fs[1]} on {fs[0]}; {disk_mbps:.0f} MB/s sequential write with fdatasync",
        "Python": platform.python_version(),
        "wget": first_line(["wget", "--version"]),
        "curl": first_line(["curl", "--version"]),
        "aria2c": first_line(["aria2c", "--version"]),
        "sha256sum": first_line(["sha256sum", "--version"]),
    }


def fmt_s(x: float) -> str:
    return "–" if x != x else (f"{x:.3f}" if x < 1 else f"{x:.2f}")


def table(rows: list[Row], seeder_row: Row | None, ratio_label: str) -> list[str]:
    head = ["tool", "median s", "range s", "MB/s", "MB/s on the wire", "files/s", "peak RSS MB", ratio_label,
            "notes"]
    body = []
    for r in rows:
        ratio = ""
        if seeder_row is not None and r is not seeder_row and r.ok and seeder_row.ok:
            ratio = f"{r.median / seeder_row.median:.2f}×"
        body.append([r.name if r.ok else f"{r.name} (FAILED: exit {[s.code for s in r.samples]})", fmt_s(r.median),
                     r.spread, f"{r.rate:.0f}" if r.bytes and r.group != "small" else "",
                     f"{r.wire_rate:.0f}" if r.wire and r.bytes and r.group in ("cold", "rss") else "",
                     f"{r.files / r.median:.0f}" if r.files and r.group == "small" else "",
                     f"{r.rss:.0f}", ratio, r.note])
    keep = [i for i in range(len(head)) if i == 0 or any(row[i] for row in body)]  # drop empty columns
    out = ["| " + " | ".join(head[i] for i in keep) + " |",
           "|---|" + "---:|" * (len(keep) - 2) + "---|"]
    out += ["| " + " | ".join(row[i] for i in keep) + " |" for row in body]
    return out


def targets(bench: Bench, link_mbps: float, disk_mbps: float) -> list[tuple[str, str, str, bool | None]]:
    by = {(r.group, r.name): r for r in bench.rows}
    out = []

    def get(group: str, name: str) -> Row | None:
        r = by.get((group, name))
        return r if r is not None and r.ok else None

    cold = get("cold", "seeder")
    aria, wget = get("cold", "aria2c -x 8 -s 8"), get("cold", "wget")
    if cold and aria:
        out.append(("cold ≥ aria2c -x 8 -s 8 speed", f"seeder {cold.median:.2f} s vs aria2c {aria.median:.2f} s "
                    f"({aria.median / cold.median:.2f}×)", "seeder time ≤ aria2c time", cold.median <= aria.median))
    if cold and wget:
        out.append(("cold ≥ 4× wget", f"{wget.median / cold.median:.1f}× faster", "≥ 4×",
                    wget.median / cold.median >= 4))
    if cold and aria and cold.wire and aria.wire:
        out.append(("… for context: on the wire (first request to last byte)",
                    f"seeder {cold.wire_rate:.0f} MB/s vs aria2c {aria.wire_rate:.0f} MB/s", "not a target", None))
    if cold:
        ceiling = min(link_mbps, disk_mbps)
        share = cold.rate / ceiling
        out.append((f"cold ≥ 90 % of min(link {link_mbps:.0f}, disk {disk_mbps:.0f}) MB/s",
                    f"{cold.rate:.0f} MB/s = {share:.0%} (wall clock: interpreter start to exit)", "≥ 90 %",
                    share >= 0.9))
        if cold.wire:
            share = cold.wire_rate / ceiling
            out.append(("… for context: on the wire (first request to last byte)",
                        f"{cold.wire_rate:.0f} MB/s = {share:.0%}", "not a target", None))
    warm = get("warm", "seeder (intact target)")
    if warm:
        out.append(("warm ≤ 0.25 s", f"{warm.median:.3f} s", "≤ 0.25 s", warm.median <= 0.25))
    ver, sha = get("verify", "seeder verify"), get("verify", "sha256sum")
    if ver and sha:
        out.append(("verify ≤ 0.6 × sha256sum", f"{ver.median / sha.median:.2f} × ({ver.median:.2f} s vs "
                    f"{sha.median:.2f} s)", "≤ 0.6 ×", ver.median <= 0.6 * sha.median))
    big = [r for r in bench.rows if r.group == "rss" and r.ok and r.name.startswith("seeder")]
    if big:
        worst = max(r.rss for r in big)
        out.append(("peak RSS < 150 MB, 1 GiB with 8 connections, flat as size grows",
                    ", ".join(f"{r.name.split('one ')[-1]}: {r.rss:.0f} MB" for r in big), "< 150 MB", worst < 150))
    dcold, dwarm = get("docker", "compose build app: cold"), get("docker", "compose build app: warm")
    if dcold and dwarm:
        share = dwarm.median / dcold.median
        out.append(("warm image rebuild < 10 % of cold, zero model bytes",
                    f"{dwarm.median:.1f} s vs {dcold.median:.1f} s = {share:.0%}; model bytes fetched warm: "
                    f"{dwarm.fetched}", "< 10 %, 0 bytes", share < 0.10 and dwarm.fetched == 0))
    return out


def chart(bench: Bench, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart"
    groups = [("cold", "Cold: default set (~760 MB), seconds"), ("verify", "Verify the same files, seconds"),
              ("small", f"{bench.data.many} small files, seconds")]
    present = [(g, t) for g, t in groups if any(r.group == g and r.ok for r in bench.rows)]
    counts = [sum(1 for r in bench.rows if r.group == g and r.ok) for g, _ in present]
    fig, axes = plt.subplots(len(present), 1, figsize=(9, 0.9 * len(present) + 0.42 * sum(counts)), squeeze=False,
                             gridspec_kw={"height_ratios": counts})
    for ax, (group, title) in zip(axes[:, 0], present):
        rows = [r for r in bench.rows if r.group == group and r.ok]
        names = [r.name for r in rows]
        values = [r.median for r in rows]
        colors = ["#2b6cb0" if r.name.startswith("seeder") else "#a0aec0" for r in rows]
        bars = ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        ax.set_title(title, loc="left", fontsize=10)
        for bar, r in zip(bars, rows):
            label = f" {r.median:.2f} s"
            if r.bytes and group == "cold":
                label += f"  ({r.rate:.0f} MB/s)"
            if group == "small":
                label += f"  ({r.files / r.median:.0f} files/s)"
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
        ax.set_xlim(0, max(values) * 1.35)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return None


def report(bench: Bench, info: dict[str, str], settings: dict[str, str], checks, out: Path, png: Path | None) -> str:
    seeder_cold = next((r for r in bench.rows if r.group == "cold" and r.name == "seeder"), None)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `.venv/bin/python bench/run.py` (see `bench/run.py --help`); every number below is from "
        f"one run of it on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Re-run it to refresh this page.",
        "",
        "## Targets",
        "",
        "| target | measured | bar | met |",
        "|---|---|---|---|",
    ]
    for name, measured, bar, met in checks:
        lines.append(f"| {name} | {measured} | {bar} | {'–' if met is None else 'yes' if met else '**no**'} |")
    overhead = [r for r in bench.rows if r.group == "cold" and r.ok and r.wire]
    if overhead:
        lines += ["", "Where the cold time goes: wall clock minus time on the wire (first request arriving at the "
                  "server to the last byte leaving it) is start-up before the first request plus the work after "
                  "the last byte (for seeder: the rest of the sha256, fsync, atomic install; then interpreter exit). "
                  + "; ".join(f"{r.name}: {r.median:.2f} s = {statistics.median(r.lead):.2f} s to the first request "
                              f"+ {statistics.median(r.wire):.2f} s on the wire + "
                              f"{r.median - statistics.median(r.wire) - statistics.median(r.lead):.2f} s after the "
                              "last byte" for r in overhead) + "."]
    by = {(r.group, r.name): r for r in bench.rows if r.ok}
    aria, big, big_aria = (by.get(("cold", "aria2c -x 8 -s 8")), by.get(("rss", "seeder, one 1 GiB file")),
                           by.get(("rss", "aria2c -x 8 -s 8, one 1 GiB file")))
    if seeder_cold and aria and seeder_cold.lead and aria.lead and seeder_cold.median > aria.median:
        text = (f"seeder is {seeder_cold.median / aria.median - 1:.0%} behind aria2c on this set. Most of it is "
                f"start-up: {statistics.median(seeder_cold.lead):.2f} s from process start to the first request "
                f"(the Python interpreter and its imports) against aria2c's "
                f"{statistics.median(aria.lead):.2f} s; on the wire seeder moves {seeder_cold.wire_rate:.0f} MB/s "
                f"to aria2c's {aria.wire_rate:.0f}.")
        if big and big_aria:
            text += (f" With more bytes to spread that fixed cost over (one 1 GiB file) seeder takes "
                     f"{big.median:.2f} s to aria2c's {big_aria.median:.2f} s.")
        lines += ["", text]
    lines += ["", "## Machine", ""] + [f"- **{k}**: {v}" for k, v in info.items()]
    lines += ["", "## Settings", ""] + [f"- **{k}**: {v}" for k, v in settings.items()]
    if png is not None and png.exists():
        lines += ["", f"![benchmark chart]({png.name})"]
    sections = [
        ("cold", "Cold: the default set, nothing on disk",
         "Same files for every tool: the embedding repo (model.safetensors and its small files) and the GGUF by "
         "URL. Ratio: the tool's time over seeder's (2.00× = half seeder's speed). seeder and huggingface_hub "
         "use the hub API/lock; wget, curl and aria2c are given the final URLs. Only seeder checks sha256."),
        ("warm", "Warm: a second run on an intact target", "Interpreter start included."),
        ("verify", "Verify: hash every file of the seeded target",
         "Ratio: time over seeder verify's. seeder hashes with OpenSSL (SHA extensions where the CPU has them) "
         "and one thread per core; this set's GGUF is 7× its safetensors, so a second thread can save at most "
         "the smaller file's share."),
        ("small", "Many small files", "A repo of small files: per-file overhead, not bandwidth."),
        ("rss", "Memory: one large file, 8 connections",
         "Peak RSS of the process (VmHWM); the page cache is not part of it. aria2c fetches the same file, "
         "for the time a larger download takes once start-up costs are spread over more bytes."),
        ("docker", "Docker: `docker compose build app`, cold vs. warm",
         "The repository's Dockerfile and docker-compose.yml, built from a copy of the working tree with this "
         "benchmark's manifest and HF_ENDPOINT at its server (build network: host). Cold: --no-cache and a "
         "models cache mount of its own that has never seen these files (pip's cache mount is warm). Warm: "
         "after an edit in app/ only."),
    ]
    for group, title, text in sections:
        rows = [r for r in bench.rows if r.group == group]
        if not rows:
            continue
        base = seeder_cold if group == "cold" else rows[0] if group == "verify" else None
        lines += ["", f"### {title}", "", text, ""]
        lines += table(rows, base, "× seeder")
        if group == "docker":
            lines += ["", "Model bytes the server sent during the builds (median): "
                      + ", ".join(f"{r.name}: {r.fetched:,}" for r in rows) + "."]
    if bench.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in bench.notes]
    lines += ["", "## Method", "", textwrap.dedent("""\
        - The server is `tests/fakehub.py` (standard library only) in the benchmark's own process on 127.0.0.1,
          sending files with `sendfile` so it costs little CPU. Each response is paced to the per-connection
          cap, and all responses share one link cap, like a CDN that limits each connection behind a link of
          fixed size. Everything runs on the same machine, so client, server and disk share its cores.
        - Each timing is wall clock from process start to exit (for seeder: interpreter start, reading the
          lock, downloading, hashing, fsync, atomic install). Medians of the runs; the range is min–max.
        - Between runs the output is deleted (untimed); the page cache is left alone, so the server reads
          from memory, as a CDN would.
        - seeder's lock is written once before the timed runs (`seeder lock`), as a committed models.lock is.
        - "On the wire" is measured by the server: from the first request of a run arriving to the last
          response finishing. It leaves out process start-up and whatever a tool does after its last byte,
          which is what the link itself sees.
        - Peak RSS is the process's VmHWM, sampled every 10 ms from /proc (the page cache is not part of it).
        """).strip()]
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


# -- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
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
    p.add_argument("--only", type=lambda s: [x for x in s.split(",") if x], default=None,
                   help="comma-separated peers to run besides seeder (wget,curl,aria2c,huggingface_hub)")
    p.add_argument("--no-install", dest="install", action="store_false", help="never apt-get/pip install")
    p.add_argument("--workdir", type=Path, default=None, help="where to generate files (default: a temp dir in /tmp)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--no-write", dest="write", action="store_false", help="print only; leave docs/ alone")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    args = p.parse_args(argv)
    link = args.per_conn * 8 if args.link is None else args.link

    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    say(subprocess.run(["df", "-h", str(base)], capture_output=True, text=True).stdout.strip())
    need = int((EMBEDDING_FILES["model.safetensors"] + LLM_SIZE) * args.scale * 4 + (1280 * MiB * 2 if args.rss else 0))
    free = shutil.disk_usage(base).free
    if free < need:
        say(f"not enough space in {base}: need about {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free")
        return 2
    work = Path(tempfile.mkdtemp(prefix="seeder-bench-", dir=base))
    say(f"work directory: {work}")
    have = ensure_tools(args.install)
    # Byte-compile seeder as an installed package is, so no timed run pays for compiling an edited module.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "seeder")], capture_output=True)
    started = time.monotonic()
    try:
        disk = disk_write_speed(work)
        say(f"disk: {disk:.0f} MB/s sequential write (fdatasync)")
        say("generating content ...")
        data = generate(work / "data", args)
        hub = FakeHub()
        hub.zero_copy = True
        hub.throttle_bps = int(args.per_conn * MB) or None
        hub.throttle_total_bps = int(link * MB) or None
        load_dir(hub, data.root)
        with hub:
            bench = Bench(args, work, hub, data)
            bench.have = have
            embedding = '[[models]]\nname = "embedding"\nrepo = "bench/embedding"\n\n'
            bench.default_manifest = bench.manifest(
                "default", embedding + url_model("llm", f"{hub.url}/files/llm.gguf", data.llm))
            say(f"server {hub.url}: {args.per_conn:g} MB/s per connection, link {link:g} MB/s")
            target = bench.cold_and_peers(bench.default_manifest)
            bench.interleaved(lambda: bench.warm_and_verify(bench.default_manifest, target))
            shutil.rmtree(target, ignore_errors=True)
            if args.small:
                bench.small_files()
            if args.rss:
                bench.memory()
            if args.docker:
                bench.docker()
        for tool, ok in have.items():
            if not ok:
                bench.notes.append(f"{tool} is not installed: its row is missing.")
        info = machine(work, disk)
        settings = {
            "Server caps": f"{args.per_conn:g} MB/s per connection, {link:g} MB/s for all connections together"
                           if link else f"{args.per_conn:g} MB/s per connection, no link cap",
            "Default set": f"{bench.payload / MB:.0f} MB: {len(EMBEDDING_FILES)} repo files "
                           f"({data.embedding['model.safetensors'].stat().st_size / MB:.1f} MB safetensors) "
                           f"+ {data.llm.stat().st_size / MB:.1f} MB GGUF by URL",
            "seeder": f"{args.connections} connections per file, {DEFAULT_PART_SIZE >> 20} MiB parts, files of "
                      f"{DEFAULT_MULTIPART_MIN >> 20} MiB or more in parts, --jobs 4 (defaults); models.lock present",
            "Runs": f"{args.runs} per cold measurement (median), more for warm/verify",
            "Duration of this benchmark": f"{(time.monotonic() - started) / 60:.1f} min",
        }
        checks = targets(bench, link or float("inf"), disk)
        png = args.out.with_suffix(".png") if args.write else None
        if png is not None and (why := chart(bench, png)):
            bench.notes.append(why)
        if args.write:
            text = report(bench, info, settings, checks, args.out, png)
        else:
            text = report(bench, info, settings, checks, work / "benchmarks.md", None)
        say("\n" + text)
        if args.write:
            say(f"wrote {args.out}" + (f" and {png}" if png and png.exists() else ""))
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
