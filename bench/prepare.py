"""Before any timing: the tools to compare with, the disk's speed, and the generated content."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import EMBEDDING_FILES, LLM_SIZE, MB, MiB, say


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
