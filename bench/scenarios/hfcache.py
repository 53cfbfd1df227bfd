"""Filling an HF cache, cold: seeder's ``layout = "hf-cache"`` against huggingface_hub's own snapshot_download,
the same repo files (the manifest's include is the peer's allow_patterns) from the same local hub.

After every run, untimed, huggingface_hub itself reads the result offline: scan_cache_dir() with no warnings,
one revision per repo that refs/main names, and snapshot_download(local_files_only=True) handing back exactly
the included files with the source's bytes. A time for a cache no app could load would compare nothing, so a
run that fails this is named in its row and in the notes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import textwrap
import time
from fnmatch import fnmatch
from pathlib import Path

from bench.common import MB, SEEDER, first_line, say
from bench.harness import Bench
from bench.measure import Row, timed

# repo -> the manifest's include and the peer's allow_patterns (None: every file). The embedding repo takes the
# README's example include; the GGUF repo makes the set the cold table's size, so the rate means something.
REPOS: dict[str, list[str] | None] = {
    "bench/embedding": ["*.json", "*.txt", "model.safetensors", "1_Pooling/*"],
    "bench/llm": None,
}
SEEDER_FILL = 'seeder, layout = "hf-cache"'
HF_FILL = "huggingface_hub snapshot_download"

# One snapshot_download per repo, side by side, as seeder installs models side by side (--jobs); .result()
# so that a failed call fails the process.
PEER_SCRIPT = textwrap.dedent("""
    import json, sys
    from concurrent.futures import ThreadPoolExecutor
    from huggingface_hub import snapshot_download
    cache, repos = sys.argv[1], json.loads(sys.argv[2])
    with ThreadPoolExecutor(len(repos)) as pool:
        calls = [pool.submit(snapshot_download, repo, cache_dir=cache, allow_patterns=patterns)
                 for repo, patterns in repos.items()]
        for call in calls:
            call.result()
""")

# What an app that loads by id gets from the cache, read by huggingface_hub with HF_HUB_OFFLINE=1.
CHECK_SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys
    from huggingface_hub import scan_cache_dir, snapshot_download
    cache, repos = sys.argv[1], json.loads(sys.argv[2])
    info = scan_cache_dir(cache)
    out = {"warnings": [str(w) for w in info.warnings],
           "revisions": {r.repo_id: [[rev.commit_hash, sorted(rev.refs)] for rev in r.revisions] for r in info.repos},
           "snapshots": {}}
    for repo, patterns in repos.items():
        try:
            snap = snapshot_download(repo, cache_dir=cache, local_files_only=True, allow_patterns=patterns)
        except Exception as e:  # what an app would get instead of the model: reported, the other repos still read
            out["snapshots"][repo] = {"error": f"{type(e).__name__}: {e}"}
            continue
        files = {}
        for root, _, names in os.walk(snap):
            for path in (os.path.join(root, name) for name in names):
                with open(path, "rb") as fh:
                    files[os.path.relpath(path, snap)] = hashlib.file_digest(fh, "sha256").hexdigest()
        out["snapshots"][repo] = {"snapshot": os.path.basename(snap), "files": files}
    print(json.dumps(out))
""")

Expected = dict[str, tuple[str, dict[str, str]]]  # repo -> (commit, {path in the snapshot: sha256})


def hf_cache(bench: Bench) -> None:
    started, cpu = time.monotonic(), _cpu()
    expected = _expected(bench)
    payload = sum(bench.data.root.joinpath("repos", repo, path).stat().st_size
                  for repo, (_, files) in expected.items() for path in files)
    count = sum(len(files) for _, files in expected.values())
    manifest = bench.manifest("hf-cache", _manifest())
    seeder_home, peer_home = bench.work / "out" / "hf-seeder", bench.work / "out" / "hf-peer"
    env = {**bench.env, "SEEDER_CONNECTIONS": str(bench.args.connections)}
    seeder_cmd = [*SEEDER, "-m", str(manifest), "-t", str(seeder_home), "-q"]
    peer_cmd = [sys.executable, "-c", PEER_SCRIPT, str(peer_home / "hub"), json.dumps(REPOS)]
    version = first_line([sys.executable, "-c", "import huggingface_hub; print(huggingface_hub.__version__)"])
    problems: dict[str, list[str]] = {SEEDER_FILL: [], HF_FILL: []}

    def checked(name: str, cmd: list[str], home: Path, log: str):
        def run(i: int):
            sample = timed(cmd, env=env, log=bench.logs / log)
            if sample.code == 0:
                found = _check(bench, home / "hub", expected, log)
                problems[name] += [f"run {i + 1}: {p}" for p in found]
                for p in found:
                    say(f"  hf-cache {name}: run {i + 1}: INVALID CACHE: {p}")
            return sample
        return run

    def both() -> None:
        bench.repeat(Row("hf-cache", SEEDER_FILL, bytes=payload, files=count,
                         note=f"{bench.args.connections} connections per file, --jobs 4 (defaults); models.lock "
                              "present; sha256 checked"),
                     bench.args.runs, checked(SEEDER_FILL, seeder_cmd, seeder_home, "hf-seeder.log"),
                     bench.fresh(seeder_home))
        bench.repeat(Row("hf-cache", HF_FILL, bytes=payload, files=count,
                         note=f"{version}: one call per repo, side by side, allow_patterns = the include; "
                              "8 workers each (its default); sizes checked, no checksum"),
                     bench.args.runs, checked(HF_FILL, peer_cmd, peer_home, "hf-peer.log"), bench.fresh(peer_home))

    bench.interleaved(both)
    for home in (seeder_home, peer_home):
        shutil.rmtree(home, ignore_errors=True)
    _annotate(bench, problems)
    took = time.monotonic() - started
    _remarks(bench, expected, payload, _others(cpu, _cpu(), took), took)


def _manifest() -> str:
    text = 'layout = "hf-cache"\n\n'  # first line: the target is an HF_HOME, hub repos under <target>/hub/
    for repo, include in REPOS.items():
        text += f'[[models]]\nname = "{repo.split("/")[1]}"\nrepo = "{repo}"\n'
        text += f"include = {json.dumps(include)}\n\n" if include is not None else "\n"
    return text


def _expected(bench: Bench) -> Expected:
    out = {}
    for repo, include in REPOS.items():
        root = bench.data.root / "repos" / repo
        files = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = path.relative_to(root).as_posix()
            if include is None or any(fnmatch(name, pattern) for pattern in include):
                with open(path, "rb") as fh:
                    files[name] = hashlib.file_digest(fh, "sha256").hexdigest()
        out[repo] = (bench.commit(repo), files)
    return out


def _check(bench: Bench, cache: Path, expected: Expected, log: str) -> list[str]:
    """What keeps huggingface_hub, offline, from reading this cache as the hub's repos: [] when nothing."""
    out = bench.logs / f"check-{log}"
    sample = timed([sys.executable, "-c", CHECK_SCRIPT, str(cache), json.dumps(REPOS)],
                   env={**bench.env, "HF_HUB_OFFLINE": "1"}, log=out)
    if sample.code:
        return [f"huggingface_hub could not read it offline (exit {sample.code}; see {out})"]
    seen = _last_json(out)
    found = [f"scan_cache_dir() warns: {w}" for w in seen["warnings"]]
    if sorted(seen["revisions"]) != sorted(expected):
        found.append(f"scan_cache_dir() lists {sorted(seen['revisions'])}, not {sorted(expected)}")
    for repo, (commit, files) in expected.items():
        if seen["revisions"].get(repo) != [[commit, ["main"]]]:
            found.append(f"{repo}: revisions {seen['revisions'].get(repo)}, not one {commit[:12]} that main names")
        snap = seen["snapshots"][repo]
        if "error" in snap:
            found.append(f"{repo}: snapshot_download(local_files_only=True) failed: {snap['error'].splitlines()[0]}")
            continue
        got = snap["files"]
        if snap["snapshot"] != commit:
            found.append(f"{repo}: snapshot_download gave snapshot {snap['snapshot']}, not {commit}")
        if got != files:
            wrong = sorted(set(got) ^ set(files) | {p for p in set(got) & set(files) if got[p] != files[p]})
            found.append(f"{repo}: files missing, extra or with other bytes: {wrong}")
    return found


def _last_json(log: Path) -> dict:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def _annotate(bench: Bench, problems: dict[str, list[str]]) -> None:
    for row in (r for r in bench.rows if r.group == "hf-cache"):
        if problems[row.name]:
            row.note += f"; INVALID CACHE: {'; '.join(problems[row.name])}"
            bench.notes.append(f"HF cache fill, {row.name}: the result is not a valid HF cache: "
                               f"{'; '.join(problems[row.name])}.")
        elif row.ok:
            row.note += "; every run's cache checked valid"


def _remarks(bench: Bench, expected: Expected, payload: int, others: float | None, took: float) -> None:
    remarks = bench.remarks.setdefault("hf-cache", [])
    sets = ", ".join(f"`{repo}` (" + (f"{len(files)} files by include {json.dumps(REPOS[repo])}" if REPOS[repo]
                                      else f"all of it: {len(files)} file{'s' if len(files) != 1 else ''}") + ")"
                     for repo, (_, files) in expected.items())
    remarks.append(f"Set: {payload / MB:.0f} MB of hub repos from the benchmark's server, at the caps above: {sets}.")
    if others is not None:
        busy = (": the machine is shared, and its other work lands unevenly on the runs, so read the ranges too"
                if others >= 0.25 else "")
        remarks.append(f"Other processes used {others:.2f} of the machine's {os.cpu_count()} cores on average "
                       "during this part (CPU time in /proc/stat less this benchmark's processes'; kernel threads "
                       f"count as other, writeback of what the runs wrote among them){busy}.")
    remarks.append(f"This part of the benchmark took {took / 60:.1f} min, set-up included.")


def _cpu() -> tuple[float, float] | None:
    """(CPU seconds the machine's cores ran anything, those this process and its reaped children ran), so far."""
    try:
        user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
            int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    except (OSError, ValueError):
        return None
    t = os.times()
    # Interrupts are left out: the loopback traffic's softirq time is the benchmark's, charged to no process.
    busy = (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")
    return busy, t.user + t.system + t.children_user + t.children_system


def _others(before, after, wall: float) -> float | None:
    """Cores' worth of CPU that processes other than this benchmark's used between two :func:`_cpu` readings."""
    if before is None or after is None or wall <= 0:
        return None
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / wall
