"""Docker, from a copy of the working tree: `docker compose build app` cold (--no-cache) and warm (app/
edited), then a first `docker compose up --build` from an empty build cache and volume."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap
import time
from pathlib import Path

from bench.common import ROOT, say
from bench.harness import Bench
from bench.measure import Row, timed


def docker(bench: Bench) -> None:
    why = _docker_unavailable()
    if why:
        bench.notes.append(f"`docker compose build`: skipped ({why}).")
        say(f"docker: skipped ({why})")
        return
    builds = f"seederbench{os.getpid()}"
    _time_builds(bench, _context(bench, builds), builds)
    # A project of its own: a models cache mount and build steps no earlier run has filled.
    first = f"{builds}up"
    _time_first_up(bench, _context(bench, first), first)
    for project in (builds, first):
        subprocess.run(["docker", "image", "rm", "-f", f"{project}-app", f"{project}-seeder"], capture_output=True)
        _prune_build_cache(project)


def _context(bench: Bench, project: str) -> Path:
    """A copy of the working tree with the benchmark's manifest and lock, marked as ``project``'s."""
    ctx = bench.work / f"ctx-{project}"
    _copy_tree(ctx)
    mdir = ctx / "bench-manifest"
    mdir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(bench.default_manifest, mdir / "models.toml")
    shutil.copy2(bench.default_manifest.with_name("models.lock"), mdir / "models.lock")
    for dockerfile in ("Dockerfile", "Dockerfile.seeder"):
        _mark_dockerfile(bench, ctx / dockerfile, project)
    # The hub listens on the host's loopback: builds and the seeder container use the host's network.
    (ctx / "bench.compose.yml").write_text(textwrap.dedent(f"""\
        services:
          seeder:
            image: {project}-seeder
            network_mode: host
            build:
              network: host
          app:
            image: {project}-app
            build:
              network: host
    """))
    return ctx


def _copy_tree(ctx: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True)
    for name in listed.stdout.decode().split("\0"):
        src = ROOT / name
        if not name or not src.is_file() or name.startswith(("models/", "docs/", "bench/")):
            continue
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, ctx / name)


def _mark_dockerfile(bench: Bench, dockerfile: Path, project: str) -> None:
    # Our own cache mount id and a marker in the seeding step: the benchmark neither reuses nor fills the
    # models cache of anyone else's builds, and can delete exactly its own build cache afterwards.
    text = dockerfile.read_text()
    marked = text.replace("id=seeder-models", f"id={project}").replace(
        "seeder seed --cache", f"SEEDER_BENCH={project} seeder seed --cache")
    if marked == text:
        bench.notes.append("Docker: the Dockerfile has no `id=seeder-models` cache mount; built as is.")
    dockerfile.write_text(marked)


def _compose(bench: Bench, project: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "HF_TOKEN_FILE": "/dev/null", "HF_ENDPOINT": bench.hub.url, "MANIFEST_DIR": "bench-manifest",
           "APP_PORT": str(_free_port())}
    return ["docker", "compose", "-p", project, "-f", "docker-compose.yml", "-f", "bench.compose.yml"], env


def _time_first_up(bench: Bench, ctx: Path, project: str) -> None:
    compose, env = _compose(bench, project)
    log = bench.logs / "docker-up.log"
    # The app itself is not started: this benchmark's model files are random bytes it would refuse.
    row = Row("docker", "compose up --build: cold", bytes=bench.payload,
              note="empty build cache and volume: both images built, then the seeder fills the volume")
    up = " ".join(compose) + " build && " + " ".join(compose) + " up --exit-code-from seeder seeder"
    bench.repeat(row, 1, lambda i: timed(["sh", "-c", up], env=env, cwd=ctx, log=log))
    if not row.ok:
        bench.notes.append(f"`docker compose up --build` failed (see {log}).")
    subprocess.run([*compose, "down", "-v", "--timeout", "5"], env=env, cwd=ctx, capture_output=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _time_builds(bench: Bench, ctx: Path, project: str) -> None:
    compose, env = _compose(bench, project)
    log = bench.logs / "docker.log"
    app_files = sorted((ctx / "app").rglob("*.py"))

    def change_app(i: int) -> None:
        with open(app_files[0], "a") as fh:
            fh.write(f"\n# benchmark edit {i} {time.time()}\n")

    cold = bench.repeat(Row("docker", "compose build app: cold", note="--no-cache; models not in the cache mount"),
                        1, lambda i: timed([*compose, "build", "--no-cache", "app"], env=env, cwd=ctx, log=log))
    if cold.ok:
        bench.repeat(Row("docker", "compose build app: warm", note="after an edit in app/ only"),
                     max(2, min(3, bench.args.runs)),
                     lambda i: timed([*compose, "build", "app"], env=env, cwd=ctx, log=log), change_app)
    else:
        bench.notes.append(f"`docker compose build` failed (see {log}); the warm build was not timed.")


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


def _docker_unavailable() -> str | None:
    if not (ROOT / "Dockerfile").is_file() or not (ROOT / "docker-compose.yml").is_file():
        return "no Dockerfile and docker-compose.yml in the repository yet"
    if not shutil.which("docker"):
        return "no docker CLI"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine reachable (bash ../shared/dockerenv/up starts one)"
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        return "no docker compose plugin"
    return None
