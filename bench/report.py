"""From the rows measured to docs/benchmarks.md: the machine, the tables, the targets met or not, the chart."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import textwrap
from datetime import datetime, timezone
from pathlib import Path

from bench.common import first_line
from bench.harness import Bench
from bench.measure import Fleet, Row
from bench.scenarios.s3 import BOTO3_READ, SEEDER_READ

# (group, heading, what the table measures) for every table of the report, in its order.
SECTIONS = [
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
    ("docker", "Docker: `docker compose build app`, cold vs. warm; a first `docker compose up --build`",
     "The repository's Dockerfiles and docker-compose.yml, built from a copy of the working tree with this "
     "benchmark's manifest and HF_ENDPOINT at its server (build network: host). Cold: --no-cache and a "
     "models cache mount of its own that has never seen these files (pip's cache mount is warm). Warm: "
     "after an edit in app/ only. First up: that cache emptied again and a new volume; both images are "
     "built, the seeder fills the volume and the app becomes healthy. Before the seeder image carried "
     "the models, the server sent the set twice here (once for the app image, once for the volume)."),
    ("hf-cache", "Filling an HF cache: seeder vs huggingface_hub's `snapshot_download`",
     "An HF_HOME that apps read by model id, filled cold from the benchmark's server: by seeder with "
     "`layout = \"hf-cache\"` as the manifest's first line (hub files land in `<target>/hub/models--org--name/`), "
     "and by huggingface_hub's own `snapshot_download(repo, cache_dir=<HF_HOME>/hub, allow_patterns=<the "
     "manifest's include>)`, each in a process of its own, runs interleaved. After every run, untimed, "
     "huggingface_hub reads the result offline (`HF_HUB_OFFLINE=1`): `scan_cache_dir()` lists no warning and "
     "one revision per repo, the one refs/main names, and `snapshot_download(local_files_only=True)` hands back "
     "exactly the included files with the source's bytes. Ratio: the tool's time over seeder's."),
    ("oci-pull", "OCI registry: pull 1 GiB",
     "One ModelPack artifact of one 1 GiB file (pushed by seeder) from a local registry (Debian's "
     "docker-registry, distribution 2.8, plain http on 127.0.0.1, no auth) into a fresh directory: by seeder "
     "(`oci = \"…\"`, lock present), by oras-py's `OrasClient.pull` and by `skopeo copy docker://… dir:`, each "
     "in a process of its own, runs interleaved. No server cap: the registry serves as fast as it can, so this "
     "is the client's cost on this machine. Ratio: the tool's time over seeder's."),
    ("oci-push", "OCI registry: push 1 GiB",
     "The same model from a seeded target into an emptied registry before every run (untimed): by "
     "`seeder push` and by oras-py's `OrasClient.push`, runs interleaved; then `seeder push` of the unchanged set "
     "to the registry that holds it (one run). Ratio: the tool's time over seeder's."),
]
S3_HEADING = "Shared S3 cache"

S3_TEXT = {
    "intro": "What a node pays to read from a shared bucket, and what the bucket saves a fleet. The bucket is "
             "SeaweedFS (an S3-compatible store) on this machine, so these figures are about the client side, "
             "not a network; client, store and origin share the machine's cores and disk.",
    "read": "One 1 GiB blob, stored beforehand under seeder's layout (`<prefix>/blobs/sha256/<hex>`), read into a "
            "fresh directory by seeder (`seeder --offline --cache s3://bucket/prefix`, no local cache: presigned "
            "URLs through seeder's multi-connection Range engine, sha256 checked, fsync and atomic install) and by "
            "boto3's `download_file`, each in a process of its own (wall clock, process start to exit, medians; "
            "interleaved). The manifest's URL points at the benchmark's server, which must see no request.",
    "fleet": "N seeder processes started at the same moment, each with its own target and local cache directory "
             "and the same `s3://` cache (a fresh prefix per run), against a throttled origin. Origin bytes: what "
             "the origin's log says it sent; bucket bytes: the nodes' summary events (`bytes_from_cache`), summed; "
             "both as multiples of the set. Wall time: the first process started to the last one exited. Pod "
             "restart: the 1-node run's node again, with its local cache and a fresh target; warm: the same node "
             "with its target intact.",
}

METHOD = textwrap.dedent("""\
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
    """).strip()


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


Target = tuple[str, str, str, bool | None]


def targets(bench: Bench, link_mbps: float, disk_mbps: float) -> list[Target]:
    by = {(r.group, r.name): r for r in bench.rows}

    def get(group: str, name: str) -> Row | None:
        r = by.get((group, name))
        return r if r is not None and r.ok else None

    out = _cold_targets(get, link_mbps, disk_mbps)
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
    up = get("docker", "compose up --build: cold")
    if up and up.fetched is not None:
        out.append(("first `docker compose up --build` downloads each byte once",
                    f"{up.fetched:,} bytes served for a {up.bytes:,}-byte set = {up.fetched / up.bytes:.3f}×",
                    "≤ 1.02×", up.fetched <= 1.02 * up.bytes))
    return out + _s3_targets(get) + _oci_targets(get)


def _s3_targets(get) -> list[Target]:
    seeder, boto = get("s3", SEEDER_READ), get("s3", BOTO3_READ)
    if not (seeder and boto):
        return []
    clean = seeder.fetched == 0
    return [("S3 read of 1 GiB: seeder ≤ boto3 download_file",
             f"seeder {seeder.median:.2f} s vs boto3 {boto.median:.2f} s ({boto.median / seeder.median:.2f}×)"
             + ("" if clean else "; the origin was contacted"), "seeder time ≤ boto3 time, 0 origin bytes",
             clean and seeder.median <= boto.median)]


def _oci_targets(get) -> list[Target]:
    out = []
    pull = get("oci-pull", "seeder (oci = …)")
    peers = [r for r in (get("oci-pull", "oras-py pull"), get("oci-pull", "skopeo copy … dir:")) if r]
    if pull and peers:
        best = min(peers, key=lambda r: r.median)
        out.append(("OCI pull of 1 GiB: seeder ≤ the fastest of oras-py and skopeo",
                    f"seeder {pull.median:.2f} s vs {best.name} {best.median:.2f} s "
                    f"({best.median / pull.median:.2f}×)",
                    "seeder time ≤ fastest peer's", pull.median <= best.median))
    push, oras = get("oci-push", "seeder push"), get("oci-push", "oras-py push")
    if push and oras:
        out.append(("OCI push of 1 GiB: seeder ≤ oras-py", f"seeder {push.median:.2f} s vs oras-py "
                    f"{oras.median:.2f} s ({oras.median / push.median:.2f}×)", "seeder time ≤ oras-py time",
                    push.median <= oras.median))
    again = get("oci-push", "seeder push, unchanged set again")
    if again:
        out.append(("OCI re-push of an unchanged set uploads nothing", again.note, "uploaded 0 bytes",
                    again.note.startswith("uploaded 0 bytes")))
    return out


def _cold_targets(get, link_mbps: float, disk_mbps: float) -> list[Target]:
    out = []
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
        _bars(ax, group, title, [r for r in bench.rows if r.group == group and r.ok])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return None


def _bars(ax, group: str, title: str, rows: list[Row]) -> None:
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


def report(bench: Bench, info: dict[str, str], settings: dict[str, str], checks, out: Path, png: Path | None) -> str:
    seeder_cold = next((r for r in bench.rows if r.group == "cold" and r.name == "seeder"), None)
    lines = _head(checks) + _where_cold_time_goes(bench) + _behind_aria2c(bench, seeder_cold)
    lines += ["", "## Machine", ""] + [f"- **{k}**: {v}" for k, v in info.items()]
    lines += ["", "## Settings", ""] + [f"- **{k}**: {v}" for k, v in settings.items()]
    if png is not None and png.exists():
        lines += ["", f"![benchmark chart]({png.name})"]
    lines += _tables(bench, seeder_cold) + _s3_section(bench)
    if bench.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in bench.notes]
    lines += ["", "## Method", "", METHOD]
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def _head(checks) -> list[str]:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `.venv/bin/python -m bench` (or `.venv/bin/python bench/run.py`; see `--help`); every number "
        f"below is from one run of it on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Re-run it to refresh "
        "this page.",
        "",
        "## Targets",
        "",
        "| target | measured | bar | met |",
        "|---|---|---|---|",
    ]
    for name, measured, bar, met in checks:
        lines.append(f"| {name} | {measured} | {bar} | {'–' if met is None else 'yes' if met else '**no**'} |")
    return lines


def _where_cold_time_goes(bench: Bench) -> list[str]:
    overhead = [r for r in bench.rows if r.group == "cold" and r.ok and r.wire]
    if not overhead:
        return []
    return ["", "Where the cold time goes: wall clock minus time on the wire (first request arriving at the "
            "server to the last byte leaving it) is start-up before the first request plus the work after "
            "the last byte (for seeder: the rest of the sha256, fsync, atomic install; then interpreter exit). "
            + "; ".join(f"{r.name}: {r.median:.2f} s = {statistics.median(r.lead):.2f} s to the first request "
                        f"+ {statistics.median(r.wire):.2f} s on the wire + "
                        f"{r.median - statistics.median(r.wire) - statistics.median(r.lead):.2f} s after the "
                        "last byte" for r in overhead) + "."]


def _behind_aria2c(bench: Bench, seeder_cold: Row | None) -> list[str]:
    by = {(r.group, r.name): r for r in bench.rows if r.ok}
    aria, big, big_aria = (by.get(("cold", "aria2c -x 8 -s 8")), by.get(("rss", "seeder, one 1 GiB file")),
                           by.get(("rss", "aria2c -x 8 -s 8, one 1 GiB file")))
    if not (seeder_cold and aria and seeder_cold.lead and aria.lead and seeder_cold.median > aria.median):
        return []
    text = (f"seeder is {seeder_cold.median / aria.median - 1:.0%} behind aria2c on this set. Most of it is "
            f"start-up: {statistics.median(seeder_cold.lead):.2f} s from process start to the first request "
            f"(the Python interpreter and its imports) against aria2c's "
            f"{statistics.median(aria.lead):.2f} s; on the wire seeder moves {seeder_cold.wire_rate:.0f} MB/s "
            f"to aria2c's {aria.wire_rate:.0f}.")
    if big and big_aria:
        text += (f" With more bytes to spread that fixed cost over (one 1 GiB file) seeder takes "
                 f"{big.median:.2f} s to aria2c's {big_aria.median:.2f} s.")
    return ["", text]


def _tables(bench: Bench, seeder_cold: Row | None) -> list[str]:
    lines = []
    for group, title, text in SECTIONS:
        rows = [r for r in bench.rows if r.group == group]
        if not rows:
            continue
        base = seeder_cold if group == "cold" else rows[0] if group in ("verify", "hf-cache", "oci-pull",
                                                                          "oci-push") else None
        lines += ["", f"### {title}", "", text, ""]
        lines += table(rows, base, "× seeder")
        if group == "docker":
            lines += ["", "Model bytes the server sent during the builds (median): "
                      + ", ".join(f"{r.name}: {r.fetched:,}" for r in rows) + "."]
        if bench.remarks.get(group):
            lines += [""] + [f"- {line}" for line in bench.remarks[group]]
    return lines


def _s3_section(bench: Bench) -> list[str]:
    reads = [r for r in bench.rows if r.group == "s3"]
    if not reads and not bench.fleets:
        return []
    lines = ["", f"### {S3_HEADING}", "", S3_TEXT["intro"]]
    if reads:
        lines += ["", "#### Reading a 1 GiB blob from the bucket: seeder vs boto3", "", S3_TEXT["read"], ""]
        lines += table(reads, reads[0], "× seeder")
    if bench.fleets:
        lines += ["", "#### 1, 2 and 4 nodes starting together", "", S3_TEXT["fleet"], ""] + _fleet_table(bench.fleets)
    remarks = bench.remarks.get("s3", [])
    return lines + ([""] + [f"- {line}" for line in remarks] if remarks else [])


def _fleet_table(fleets: list[Fleet]) -> list[str]:
    out = ["| run | nodes | origin bytes (× set) | bucket bytes (× set) | wall s (median) | range s | all exit 0 | "
           "notes |", "|---|---:|---:|---:|---:|---:|---|---|"]
    for f in fleets:
        spread = f"{min(f.seconds):.2f}–{max(f.seconds):.2f}" if len(f.seconds) > 1 else ""
        origin, bucket = max(f.origin, default=0), max(f.bucket, default=0)
        codes = "yes" if f.ok else f"**no**: {sorted(set(f.codes))}"
        out.append(f"| {f.name} | {f.nodes} | {origin:,} ({origin / f.payload:.2f}×) | {bucket:,} "
                   f"({bucket / f.payload:.2f}×) | {fmt_s(f.median)} | {spread} | {codes} | {f.note} |")
    return out
