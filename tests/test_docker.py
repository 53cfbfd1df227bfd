"""Containers on a real Docker engine: the seeder image, the app image with bundled models, compose.

    TESTCONTAINERS_RYUK_DISABLED=true SEEDER_REQUIRE_DOCKER=1 .venv/bin/python -m pytest tests/test_docker.py

The first tests need no Docker: they check the reference app's file loaders and start-up check.
Every other test is marked ``docker`` and ``slow``. Without a reachable engine they skip, saying why,
unless SEEDER_REQUIRE_DOCKER=1 (CI), which turns the skip into a failure.

How the pieces meet (one engine, no registry, only the local python:3.11-slim):

* The fake hub (tests/fakehub.py) runs in a container on the *host* network. Tests reach it at
  127.0.0.1:PORT; builds (BuildKit's RUN steps) and containers on any compose network reach it at the
  bridge gateway (172.17.0.1:PORT): the same HF_ENDPOINT serves the build and the running seeder, as
  in real use, and no --network host build is needed. Being plain http to a non-localhost address,
  it needs SEEDER_ALLOW_HTTP=1, passed the documented way.
* Builds use a copy of this checkout (the files git knows about) in a temporary directory, with the
  test's own models.toml: the test can change app code or the manifest without touching the repo.
* Images are built once per session; every compose test has its own project (network, volume) and
  is torn down with ``down -v``. tests/docker/compose.test.yml only adds the prebuilt image tags,
  short retries and a quick healthcheck.
* Model content that must be downloaded is unique to the session (seeded by a random id), so
  BuildKit's cache mount, which outlives test runs, cannot make a download test pass vacuously.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from docker.errors import NotFound

from app.loaders import BadModelFile, describe, read_gguf, read_safetensors
from tests.conftest import run_seeder, seeder_env
from tests.docker import data as d

# testcontainers' reaper (Ryuk) is an image that cannot be pulled here; containers are removed by the tests.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

ROOT = Path(__file__).resolve().parent.parent
TESTS_DOCKER = ROOT / "tests" / "docker"
BASE_IMAGE = "python:3.11-slim"
SEEDER_UID = 10001  # Dockerfile.seeder's user


def docker_test(fn):
    return pytest.mark.docker(pytest.mark.slow(fn))


# ==================================================================================================
# Fast: the reference app's loaders and start-up check (no Docker)
# ==================================================================================================


def _stages(dockerfile: Path) -> dict[str, list[str]]:
    """Each named stage's instructions, comments and blank lines left out."""
    stages, name = {}, None
    for line in dockerfile.read_text().splitlines():
        if line.startswith("FROM "):
            name = line.split(" AS ")[-1].strip() if " AS " in line else None
            stages[name] = []
        if name and line.strip() and not line.lstrip().startswith("#"):
            stages[name].append(line)
    return stages


def test_both_dockerfiles_build_the_models_the_same_way():
    """What makes `docker compose up --build` download once and store the model layer once: the stages up
    to and including the models are the same instructions in both files."""
    app, seeder = _stages(ROOT / "Dockerfile"), _stages(ROOT / "Dockerfile.seeder")
    for stage in ("build", "models", "bundle"):
        assert app[stage] == seeder[stage], stage
    assert "FROM bundle AS app" in app["app"][0] and "FROM bundle AS bundled" in seeder["bundled"][0]


def test_where_a_seeder_fills_the_volume_the_app_image_carries_no_models():
    """One host (docker-compose.yml): both images bundle the models, one download for both. Where nodes fill
    their volumes themselves (compose.cluster.yml, Kubernetes), the app image is the slim target."""
    stages = _stages(ROOT / "Dockerfile")
    assert list(stages)[-1] == "app"  # what a build without --target makes: docker-compose.yml's app
    slim = stages["slim"]
    assert slim[1] == "COPY --from=build /opt/venv /opt/venv" and not any("models" in s for s in slim[:2])
    assert slim[2:] == stages["app"][1:]  # the same image but for the models
    single = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert "target" not in single["app"]["build"] and single["seeder"]["build"]["target"] == "bundled"
    cluster = yaml.safe_load((ROOT / "compose.cluster.yml").read_text())["services"]
    assert cluster["app"]["build"]["target"] == "slim"
    assert "args" not in cluster["app"]["build"] and "secrets" not in cluster["app"]["build"]  # no hub, no token
    assert {cluster[n]["build"]["target"] for n in ("node1", "node2", "node3")} == {"slim"}


def test_safetensors_header_of_the_real_minilm():
    facts = read_safetensors(d.minilm_dir() / "model.safetensors")
    assert facts["tensors"] == d.MINILM_TENSORS
    assert facts["dtypes"] == ["F32", "I64"]
    assert facts["metadata"] == {"format": "pt"}
    assert facts["parameters"] > 22_000_000


def test_gguf_header_of_a_generated_file(tmp_path):
    path = d.make_gguf(tmp_path / "m.gguf", seed=7, name="unit")
    assert read_gguf(path) == {"format": "gguf", "version": 3, "tensors": 2, "metadata_kv": 5,
                               "architecture": "llama", "name": "unit"}
    assert describe(path)["format"] == "gguf"
    assert describe(tmp_path / "vocab.txt") is None  # formats the app does not load are not opened


@pytest.mark.parametrize("kind", ["gguf", "safetensors"])
def test_loaders_reject_truncated_and_foreign_files(tmp_path, kind):
    good = (d.make_gguf(tmp_path / "a.gguf", tensor_bytes=4096) if kind == "gguf"
            else d.make_safetensors(tmp_path / "a.safetensors"))
    data = good.read_bytes()
    cut = good.with_name(f"cut.{kind}")
    # GGUF: cut inside the metadata; safetensors: cut inside the tensor data
    cut.write_bytes(data[:60] if kind == "gguf" else data[:-100])
    foreign = good.with_name(f"foreign.{kind}")
    foreign.write_bytes(b"<html>not a model</html>" * 10)
    for bad in (cut, foreign):
        with pytest.raises(BadModelFile):
            describe(bad)


def _seed_local(hub, tmp_path: Path) -> Path:
    """A target seeded by the host's seeder from the in-process fake hub: one repo and one GGUF URL."""
    st = d.make_safetensors(tmp_path / "src" / "model.safetensors", seed=3)
    hub.add_repo("org/emb", {"config.json": b'{"hidden_size": 64}', "model.safetensors": st})
    gguf = d.make_gguf(tmp_path / "src" / "tiny.gguf", seed=4, tensor_bytes=8192)
    url = hub.add_file("tiny.gguf", gguf)
    manifest = tmp_path / "models.toml"
    manifest.write_text(f'[[models]]\nname = "emb"\nrepo = "org/emb"\n\n'
                        f'[[models]]\nname = "llm"\nurl = "{url}"\nsha256 = "{d.sha256_file(gguf)}"\n'
                        f'size = {gguf.stat().st_size}\n')
    target = tmp_path / "models"
    run = run_seeder("-m", str(manifest), "-t", str(target), hub=hub)
    assert run.code == 0, run
    return target


def _start_app(models: Path) -> subprocess.Popen:
    env = {**os.environ, "MODELS_DIR": str(models), "PORT": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "app"], env=env, stderr=subprocess.PIPE, text=True)


def test_app_serves_what_is_installed(hub, tmp_path):
    target = _seed_local(hub, tmp_path)
    proc = _start_app(target)
    try:
        line = proc.stderr.readline()
        assert "listening on :" in line, line
        base = f"http://127.0.0.1:{line.rsplit(':', 1)[1].strip()}"
        assert http_get(base + "/healthz")[0] == 200
        status, models = http_get(base + "/models")
    finally:
        proc.terminate()
        proc.wait(10)
    assert status == 200
    by_name = {m["name"]: m for m in models}
    emb = {f["path"]: f for f in by_name["emb"]["files"]}
    assert emb["model.safetensors"]["header"]["tensors"] == 3
    assert emb["model.safetensors"]["sha256"] == d.sha256_file(target / "emb" / "model.safetensors")
    assert by_name["emb"]["commit"] and by_name["emb"]["revision"] == "main"
    llm = by_name["llm"]["files"][0]
    assert llm["header"]["format"] == "gguf" and llm["header"]["tensors"] == 2


def test_app_refuses_to_start_on_a_missing_model(hub, tmp_path):
    target = _seed_local(hub, tmp_path)
    (target / "emb" / "model.safetensors").unlink()
    proc = _start_app(target)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "refusing to start" in err and "emb/model.safetensors: missing" in err, err

    proc = _start_app(tmp_path / "nothing-here")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "no models installed" in err, err


# ==================================================================================================
# Helpers for the Docker tests
# ==================================================================================================


def sh(*args: str, check: bool = True, timeout: float = 900, env: dict | None = None,
       cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-8000:]}")
    return proc


def docker(*args: str, **kw) -> subprocess.CompletedProcess:
    return sh("docker", *args, **kw)


def inspect(obj: str) -> dict:
    return json.loads(docker("inspect", obj).stdout)[0]


def http_get(url: str, timeout: float = 10) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def events(text: str) -> list[dict]:
    """seeder's JSON log lines in a container's (or a build's) output."""
    out = []
    for line in text.splitlines():
        line = line[line.find("{"):] if "{" in line else ""
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def docker_time(value: str) -> datetime:
    # Docker prints nanoseconds; fromisoformat takes at most microseconds.
    head, _, frac = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]:0<6}+00:00")


def git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def copy_checkout(dest: Path) -> Path:
    """Copy the files of this checkout (tracked or new, not ignored) into ``dest``: a build context."""
    listing = sh("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).stdout
    for rel in filter(None, listing.split("\0")):
        src = ROOT / rel
        if rel.startswith("tests/") or not src.is_file():  # tests are never in the context (.dockerignore)
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    return dest


@dataclass
class Hub:
    """The fake hub container, seen from the host (``host_url``) and from containers/builds (``url``)."""

    container: object
    port: int
    gateway: str

    @property
    def host_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.gateway}:{self.port}"

    def _call(self, path: str, body: dict | None = None):
        req = urllib.request.Request(self.host_url + path, method="GET" if body is None else "POST",
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def log(self) -> list[dict]:
        return self._call("/_log")

    def clear(self) -> None:
        self._call("/_log/clear", {})

    def fault(self, **spec) -> None:
        self._call("/_faults", spec)

    def clear_faults(self) -> None:
        self._call("/_faults/clear", {})

    def file_bytes(self, log: list[dict] | None = None) -> dict[str, int]:
        """Body bytes of file downloads (not API calls), per path."""
        out: dict[str, int] = {}
        for r in self.log() if log is None else log:
            if r["method"] == "GET" and r["kind"] in ("resolve", "files", "cdn") and r["bytes_sent"]:
                out[r["path"]] = out.get(r["path"], 0) + r["bytes_sent"]
        return out


def token_only_to_the_hub(log: list[dict]) -> bool:
    """The token went with every request to the hub, and with none to the CDN it redirects to."""
    hub = [r for r in log if r["server"] == "hub"]
    return bool(hub) and all(r["auth"] for r in hub) and not any(r["auth"] for r in log if r["server"] == "cdn")


@contextmanager
def run_hub(image: str, data: Path, gateway: str, token: str | None = None, port: int | None = None):
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    port = port or free_port()
    command = ["--port", str(port)] + (["--token", token] if token else [])
    container = (DockerContainer(image, command=command)
                 .with_kwargs(network_mode="host")
                 .with_volume_mapping(str(data), "/data", "ro")
                 .waiting_for(LogMessageWaitStrategy("fakehub listening")))
    container.start()
    try:
        yield Hub(container, port, gateway)
    finally:
        with suppress(NotFound):  # a test may have stopped it already
            container.stop()


def build(ctx: Path, tag: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Build the app image (./Dockerfile) from ``ctx`` with BuildKit."""
    return docker("buildx", "build", "--progress", "plain", "-t", tag, *args, ctx, check=check)


def hub_args(hub: Hub) -> list[str]:
    return ["--build-arg", f"HF_ENDPOINT={hub.url}", "--build-arg", "SEEDER_ALLOW_HTTP=1"]


def lock_on_host(ctx: Path, hub: Hub) -> None:
    """`seeder lock` from the host, as a developer would before committing models.lock."""
    run = run_seeder("lock", "-m", str(ctx / "models.toml"), hub=None,
                     env=seeder_env(hub.host_url, SEEDER_ALLOW_HTTP="1"))
    assert run.code == 0, run


def volume_files(volume: str) -> dict:
    """What a models volume holds: visible files (through the model symlinks) with sha256 and owner."""
    script = r"""
import hashlib, json, os, sys
root = "/m"; out = {"files": {}, "lock": None}
for name in sorted(os.listdir(root)):
    if name == ".seeder":
        continue
    for dirpath, _, files in os.walk(os.path.join(root, name), followlinks=True):
        for f in files:
            p = os.path.join(dirpath, f)
            out["files"][os.path.relpath(p, root)] = [hashlib.sha256(open(p, "rb").read()).hexdigest(),
                                                      os.stat(p).st_uid]
lock = os.path.join(root, ".seeder", "models.lock")
if os.path.exists(lock):
    out["lock"] = json.load(open(lock))
print(json.dumps(out))
"""
    out = docker("run", "--rm", "--network", "none", "-v", f"{volume}:/m:ro", BASE_IMAGE, "python3", "-c", script)
    return json.loads(out.stdout)


def host_files(root: Path) -> dict[str, list]:
    out = {}
    for model in sorted(p for p in root.iterdir() if p.name != ".seeder"):
        for dirpath, _, files in os.walk(model, followlinks=True):
            for f in files:
                p = Path(dirpath) / f
                out[p.relative_to(root).as_posix()] = [d.sha256_file(p), p.stat().st_uid]
    return out


def scan_for(path: Path, *needles: bytes) -> dict[bytes, list[str]]:
    """Where in an image tarball (``docker save``) each needle occurs: every file of every layer is read."""
    found: dict[bytes, list[str]] = {n: [] for n in needles}
    overlap = max(map(len, needles)) - 1

    def search(stream, where: str) -> None:
        head = stream.read(512)
        if head[:2] == b"\x1f\x8b":  # a compressed layer
            stream.seek(0)
            stream = _Seekable(gzip.GzipFile(fileobj=stream))
            head = stream.read(512)
        if len(head) == 512 and head[257:262] == b"ustar":  # a layer (or any tar): look inside every file
            stream.seek(0)
            with tarfile.open(fileobj=stream, mode="r|") as layer:
                for member in layer:
                    if member.isfile():
                        search(_Seekable(layer.extractfile(member)), f"{where}:{member.name}")
            return
        tail, block = b"", head
        while block:
            window = tail + block
            for needle in needles:
                if needle in window and where not in found[needle]:
                    found[needle].append(where)
            tail = window[-overlap:] if overlap else b""
            block = stream.read(1 << 20)

    with tarfile.open(path) as outer:
        for member in outer:
            if member.isfile():
                search(_Seekable(outer.extractfile(member)), member.name)
    return found


class _Seekable:
    """Just enough of a file for scan_for: read, and seek(0) back over what was already read."""

    def __init__(self, raw):
        self.raw, self.buf, self.pos = raw, b"", 0

    def read(self, n: int = -1) -> bytes:
        if self.pos < len(self.buf):
            chunk = self.buf[self.pos:self.pos + n] if n >= 0 else self.buf[self.pos:]
            self.pos += len(chunk)
            if n < 0 or len(chunk) == n:
                return chunk
            more = self.raw.read(n - len(chunk))
        else:
            chunk, more = b"", self.raw.read(n)
        if len(self.buf) < 4096:  # remember the head only, for the seek(0) after sniffing
            self.buf += more
        self.pos += len(more)
        return chunk + more

    def seek(self, pos: int) -> None:
        assert pos == 0 and self.pos <= len(self.buf), "only a rewind over the sniffed head is supported"
        self.pos = 0


# ==================================================================================================
# Session fixtures: engine, fake hub, images
# ==================================================================================================


@pytest.fixture(scope="session")
def engine() -> str:
    """Skip (or, with SEEDER_REQUIRE_DOCKER=1, fail) without a usable engine; returns the bridge gateway."""
    def unavailable(reason: str):
        if os.environ.get("SEEDER_REQUIRE_DOCKER") == "1":
            pytest.fail(f"SEEDER_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
        pytest.skip(reason)

    if shutil.which("docker") is None:
        unavailable("no docker CLI on PATH")
    for probe, what in ((["docker", "info", "--format", "{{.ServerVersion}}"], "no Docker engine is reachable"),
                        (["docker", "compose", "version"], "docker compose (v2) is not installed"),
                        (["docker", "buildx", "version"], "docker buildx is not installed")):
        try:
            proc = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            unavailable(f"{what}: {e}")
        if proc.returncode != 0:
            unavailable(f"{what}: {(proc.stderr or proc.stdout).strip()[:300]}")
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        unavailable(f"no local {BASE_IMAGE} image (run ../shared/dockerenv/up)")
    config = inspect("bridge")["IPAM"]["Config"][0]
    return config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


@pytest.fixture(scope="session")
def sid() -> str:
    """Unique per session: names, and the content of models that must really be downloaded."""
    return secrets.token_hex(4)


@pytest.fixture(scope="session")
def hub_image(engine) -> str:
    """The fake hub's image, tagged by its content: built once, reused by later sessions."""
    sources = (TESTS_DOCKER / "Dockerfile.fakehub", ROOT / "tests" / "fakehub.py")
    tag = "seeder-test-fakehub:" + hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    if docker("image", "inspect", tag, check=False).returncode != 0:
        docker("build", "-q", "-f", sources[0], "-t", tag, ROOT / "tests")
    return tag


@dataclass
class Models:
    """Hub content and what each model must install: manifest entry, files (path -> local source)."""

    data: Path
    manifests: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict[str, Path]] = field(default_factory=dict)
    urls: dict[str, dict[str, Path]] = field(default_factory=dict)  # hub path -> source, per model

    def manifest(self, *names: str) -> str:
        return "\n".join(self.manifests[n] for n in names)

    def expected(self, *names: str) -> dict[str, str]:
        """Visible path in the target -> sha256."""
        return {f"{n}/{rel}": d.sha256_file(src) for n in names for rel, src in self.files[n].items()}

    def add_repo(self, name: str, repo: str, content: dict, include: list[str] | None = None) -> None:
        """A repo model: the repo on the hub (at a fixed commit), its manifest entry, what it installs."""
        commit = hashlib.sha1(repo.encode()).hexdigest()
        files = d.add_repo(self.data, repo, content, commit)
        if include:
            files = {p: f for p, f in files.items() if any(fnmatch.fnmatch(p, g) for g in include)}
        self.files[name] = files
        self.urls[name] = {f"/{repo}/resolve/{commit}/{p}": f for p, f in files.items()}
        self.manifests[name] = f'[[models]]\nname = "{name}"\nrepo = "{repo}"\nrevision = "{commit}"\n' + (
            f"include = {json.dumps(include)}\n" if include else "")

    def assert_fetched(self, fetched: dict[str, int], *names: str) -> None:
        """``fetched`` (body bytes per hub path) is exactly the files of ``names``, each once."""
        want = {url: src.stat().st_size for n in names for url, src in self.urls[n].items()}
        assert set(fetched) == set(want), f"fetched {sorted(fetched)}, expected {sorted(want)}"
        # Each in full. A bit more is possible (a parallel download that splits a slow part leaves the
        # server sending a little past the new end), a second copy is not.
        assert all(fetched[url] >= size for url, size in want.items()), fetched
        assert sum(fetched.values()) < 1.1 * sum(want.values()) + (1 << 20), fetched


@pytest.fixture(scope="session")
def models(tmp_path_factory, sid) -> Models:
    """Everything the session's hub serves.

    * ``embedding`` + ``llm``: the default manifest's two models at their real repos and commits: the
      real all-MiniLM-L6-v2 files (90 MB safetensors) and a small GGUF standing in for TinyLlama.
    * ``small``, ``tinyllm``, ``reranker``: small models unique to this session, for the build-cache test.
    * ``private``: small, unique, for the token test (whose hub serves this data with ``--token``).
    """
    root = tmp_path_factory.mktemp("hub")
    data, src = root / "data", root / "src"
    m = Models(data)

    files = d.add_minilm(data)
    m.files["embedding"] = {p: f for p, f in files.items() if any(fnmatch.fnmatch(p, g) for g in d.MINILM_INCLUDE)}
    m.urls["embedding"] = {f"/{d.MINILM_REPO}/resolve/{d.MINILM_COMMIT}/{p}": f for p, f in m.files["embedding"].items()}
    m.manifests["embedding"] = (f'[[models]]\nname = "embedding"\nrepo = "{d.MINILM_REPO}"\n'
                                f'revision = "{d.MINILM_COMMIT}"\ninclude = {json.dumps(d.MINILM_INCLUDE)}\n')
    gguf = d.make_gguf(src / d.GGUF_FILE, seed=1)
    d.add_repo(data, d.GGUF_REPO, {d.GGUF_FILE: gguf}, d.GGUF_COMMIT)
    m.files["llm"] = {d.GGUF_FILE: gguf}
    m.urls["llm"] = {f"/{d.GGUF_REPO}/resolve/{d.GGUF_COMMIT}/{d.GGUF_FILE}": gguf}
    m.manifests["llm"] = (f'[[models]]\nname = "llm"\n'
                          f'url = "https://huggingface.co/{d.GGUF_REPO}/resolve/{d.GGUF_COMMIT}/{d.GGUF_FILE}"\n'
                          f'sha256 = "{d.sha256_file(gguf)}"\nsize = {gguf.stat().st_size}\n')

    base = int(sid, 16)  # seeds: content no earlier session (or BuildKit cache) has seen
    for seed, name in enumerate(("small", "reranker"), base + 1):
        m.add_repo(name, f"t-{sid}/{name}", {**d.tiny_repo_files(seed),
                   "model.safetensors": d.make_safetensors(src / name / "model.safetensors", seed=seed)})
    # A plain URL (not a hub repo); its manifest entry names the hub, filled in by the test that uses it.
    tiny = d.make_gguf(data / "files" / f"t-{sid}" / "tiny.gguf", seed=base + 3, tensor_bytes=256 << 10)
    m.files["tinyllm"] = {"tiny.gguf": tiny}
    m.urls["tinyllm"] = {f"/files/t-{sid}/tiny.gguf": tiny}
    m.manifests["tinyllm"] = (f'[[models]]\nname = "tinyllm"\nurl = "{{hub}}/files/t-{sid}/tiny.gguf"\n'
                              f'sha256 = "{d.sha256_file(tiny)}"\nsize = {tiny.stat().st_size}\n')
    m.add_repo("private", f"gated-{sid}/private", {  # gated when the hub runs with --token
        "config.json": json.dumps({"private": sid}).encode(),
        "model.safetensors": d.make_safetensors(src / "private" / "model.safetensors", seed=base + 4)})
    return m


@pytest.fixture(scope="session")
def fakehub(hub_image, models, engine):
    with run_hub(hub_image, models.data, engine) as h:
        yield h


@dataclass
class Stack:
    """The compose project's images, built once, and the settings every compose test starts from."""

    ctx: Path
    env: dict[str, str]
    seeder_image: str
    app_image: str
    hub: Hub
    models: Models
    names: tuple[str, ...] = ("embedding", "llm")

    @contextmanager
    def project(self, name: str, *files: str, **env: str):
        compose = Compose(self, name, files, {**self.env, "APP_PORT": str(free_port()), **env})
        try:
            yield compose
        finally:
            compose("down", "-v", "--remove-orphans", "--timeout", "5", check=False)


class Compose:
    def __init__(self, stack: Stack, name: str, files: tuple[str, ...], env: dict[str, str]):
        self.stack, self.name, self.env = stack, name, env
        self.files = [stack.ctx / "docker-compose.yml", *(stack.ctx / f for f in files),
                      TESTS_DOCKER / "compose.test.yml"]

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        opts = ["--ansi", "never", "-p", self.name, "--project-directory", str(self.stack.ctx)]
        for f in self.files:
            opts += ["-f", str(f)]
        return sh("docker", "compose", *opts, *args, check=check, timeout=timeout, env=self.env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['APP_PORT']}"

    def container(self, service: str) -> dict | None:
        ids = self("ps", "-a", "-q", service).stdout.split()
        return inspect(ids[0]) if ids else None

    def logs(self, service: str) -> str:
        proc = docker("logs", self.container(service)["Id"])
        return proc.stdout + proc.stderr


def compose_env(**extra: str) -> dict[str, str]:
    """The environment for `docker compose`: the caller's, minus anything that would change the project."""
    ours = ("MANIFEST_DIR", "APP_PORT", "MODELS_HOST_DIR")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "SEEDER_", "COMPOSE_", "TEST_")) and k not in ours}
    return {**env, **extra}


@pytest.fixture(scope="session")
def stack(tmp_path_factory, fakehub, models, sid) -> Stack:
    """Build the seeder and app images through compose, as `docker compose up` would, once."""
    ctx = copy_checkout(tmp_path_factory.mktemp("stack"))
    # MANIFEST_DIR is the one switch for both images; the checkout's own models.toml stays untouched.
    (ctx / "deploy").mkdir(exist_ok=True)
    (ctx / "deploy" / "models.toml").write_text(models.manifest("embedding", "llm"))
    images = f"seeder-test-{sid}-seeder", f"seeder-test-{sid}-app"
    env = compose_env(HF_ENDPOINT=fakehub.url, SEEDER_ALLOW_HTTP="1", MANIFEST_DIR="deploy",
                      TEST_SEEDER_IMAGE=images[0], TEST_APP_IMAGE=images[1])
    s = Stack(ctx, env, *images, fakehub, models)
    with s.project(f"seedertest{sid}build") as c:
        c("build")
    yield s
    docker("rmi", s.seeder_image, s.app_image, check=False)


# ==================================================================================================
# The compose file's settings
# ==================================================================================================


@docker_test
def test_compose_settings_reach_the_seeder_and_the_build(engine, tmp_path):
    def config(**env: str) -> dict:
        out = sh("docker", "compose", "-f", ROOT / "docker-compose.yml", "config", "--format", "json",
                 env=compose_env(**env), cwd=ROOT)
        return json.loads(out.stdout)

    # No settings at all: the real hub, no token (an empty secret), port 8000, the named volume.
    c = config()
    seeder, app = c["services"]["seeder"], c["services"]["app"]
    assert seeder["environment"]["HF_ENDPOINT"] == app["build"]["args"]["HF_ENDPOINT"] == "https://huggingface.co"
    assert c["secrets"]["hf_token"]["file"] == "/dev/null"
    assert [s["source"] for s in seeder["secrets"]] == [s["source"] for s in app["build"]["secrets"]] == ["hf_token"]
    assert app["ports"][0]["published"] == "8000" and "models" in c["volumes"]
    assert seeder["restart"] == "no" and seeder["read_only"] is True  # one-shot, hardened
    assert app["depends_on"]["seeder"]["condition"] == "service_completed_successfully"
    [mount] = app["volumes"]
    assert (mount["source"], mount["target"], mount["read_only"]) == ("models", "/app/models", True)

    # One setting each, for both the seeder container and the app image's build.
    token = tmp_path / "token"
    c = config(HF_ENDPOINT="https://mirror.example", SEEDER_ALLOW_HTTP="1", HF_TOKEN_FILE=str(token),
               MANIFEST_DIR="deploy")
    seeder, app = c["services"]["seeder"], c["services"]["app"]
    for key, value in (("HF_ENDPOINT", "https://mirror.example"), ("SEEDER_ALLOW_HTTP", "1")):
        assert seeder["environment"][key] == app["build"]["args"][key] == value
    assert seeder["build"]["args"]["MANIFEST_DIR"] == app["build"]["args"]["MANIFEST_DIR"] == "deploy"
    assert c["secrets"]["hf_token"]["file"] == str(token)


# ==================================================================================================
# 1, 2: docker compose up, twice
# ==================================================================================================


@pytest.fixture(scope="module")
def first_up(stack, fakehub, sid):
    """`docker compose up` on a fresh volume; yields the project and what the hub saw."""
    with stack.project(f"seedertest{sid}up") as c:
        fakehub.clear()
        c("up", "-d", "--wait")
        yield c, fakehub.log()


@docker_test
def test_compose_up_seeds_the_volume_then_starts_the_app(first_up, stack):
    c, hub_log = first_up
    seeder, app = c.container("seeder"), c.container("app")

    # the seeder ran to completion before the app started
    assert seeder["State"]["Status"] == "exited" and seeder["State"]["ExitCode"] == 0
    assert app["State"]["Running"] and app["State"]["Health"]["Status"] == "healthy"
    assert docker_time(seeder["State"]["FinishedAt"]) <= docker_time(app["State"]["StartedAt"])

    # ... with the compose file's hardening in effect
    host = seeder["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert "/tmp" in host["Tmpfs"]
    assert seeder["Config"]["User"] == f"{SEEDER_UID}:{SEEDER_UID}"
    # no token was given: the secret is there, empty, and the seeder did without
    assert "/run/secrets/hf_token" in [m["Destination"] for m in seeder["Mounts"]]

    # every file is in the volume, with the sha256 the lock records (and the source's)
    volume = next(m["Name"] for m in seeder["Mounts"] if m["Destination"] == "/models")
    got = volume_files(volume)
    expected = stack.models.expected(*stack.names)
    assert {p: v[0] for p, v in got["files"].items()} == expected
    assert {v[1] for v in got["files"].values()} == {SEEDER_UID}  # written by the non-root user
    lock = got["lock"]  # resolved in the container: the baked manifest's directory is read-only
    assert lock is not None
    for model in lock["models"]:
        for f in model["files"]:
            src = stack.models.files[model["name"]][f["path"]]
            assert f.get("sha256", d.sha256_file(src)) == expected[f"{model['name']}/{f['path']}"]
            assert "git_oid" not in f or f["git_oid"] == git_blob_sha1(src)
    # ... from the copy the image carries (the build downloaded them): none from the hub
    assert stack.hub.file_bytes(hub_log) == {}
    assert any(e.get("level") == "warning" and e.get("path") == "/models/.seeder/models.lock"
               for e in events(c.logs("seeder")))  # ... and said so

    # the app reports them: revision, commit, sizes, sha256 and what their headers say
    status, listed = http_get(c.url + "/models")
    assert status == 200
    by_name = {m["name"]: m for m in listed}
    assert sorted(by_name) == ["embedding", "llm"]
    assert by_name["embedding"]["commit"] == d.MINILM_COMMIT
    reported = {f"{m['name']}/{f['path']}": f["sha256"] for m in listed for f in m["files"]}
    assert reported == expected
    files = {f["path"]: f for f in by_name["embedding"]["files"]}
    assert files["model.safetensors"]["size"] == 90_868_376
    assert files["model.safetensors"]["header"]["tensors"] == d.MINILM_TENSORS
    assert by_name["llm"]["files"][0]["header"]["format"] == "gguf"


@docker_test
def test_second_compose_up_fetches_nothing(first_up, fakehub):
    c, _ = first_up
    before = c.container("seeder")["State"]["FinishedAt"]
    fakehub.clear()
    c("up", "-d", "--wait")
    seeder = c.container("seeder")
    assert seeder["State"]["ExitCode"] == 0
    assert docker_time(seeder["State"]["StartedAt"]) > docker_time(before)  # it did run again
    # Not one request: the volume is complete, and the lock it resolved the first time is in it.
    assert fakehub.log() == []
    summary = [e for e in events(c.logs("seeder")) if e.get("event") == "summary"][-1]
    assert summary["bytes_downloaded"] == 0


# ==================================================================================================
# 2b: a cold `docker compose up --build` downloads each byte once (#13)
# ==================================================================================================


def unique_sizes(*images: str) -> dict[str, float]:
    """`docker system df -v`: bytes only that image holds (a layer shared with another is not counted)."""
    units = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}
    rows = json.loads(docker("system", "df", "-v", "--format", "{{json .Images}}").stdout)
    ids = {inspect(i)["Id"]: i for i in images}
    out = {}
    for row in rows:
        if row["ID"] in ids:
            number, unit = re.fullmatch(r"([\d.]+)\s*([kMG]?B)", row["UniqueSize"]).groups()
            out[ids[row["ID"]]] = float(number) * units[unit]
    return out


@docker_test
def test_first_compose_up_downloads_each_byte_once(hub_image, engine, sid, tmp_path):
    """From a build cache and a volume that have never seen these models: the hub serves each byte
    once for both images and the volume; then a refresh after a model changed fetches only the change."""
    data, src, base = tmp_path / "data", tmp_path / "src", int(sid, 16) + 100
    repo = f"cold-{sid}/emb"

    def emb(seed: int) -> dict:
        return {**d.tiny_repo_files(base), "model.safetensors": d.make_safetensors(
            src / str(seed) / "model.safetensors", seed=seed, floats=1 << 20)}

    first = d.add_repo(data, repo, emb(base), hashlib.sha1(f"{sid}-1".encode()).hexdigest())
    gguf = d.make_gguf(data / "files" / f"cold-{sid}" / "tiny.gguf", seed=base + 1, tensor_bytes=3 << 20)
    total = sum(f.stat().st_size for f in (*first.values(), gguf))
    ctx = copy_checkout(tmp_path / "ctx")
    (ctx / "deploy").mkdir(exist_ok=True)
    images = f"seeder-test-{sid}-cold-seeder", f"seeder-test-{sid}-cold-app"
    with run_hub(hub_image, data, engine) as hub:
        (ctx / "deploy" / "models.toml").write_text(
            f'[[models]]\nname = "emb"\nrepo = "{repo}"\nrevision = "main"\n\n'
            f'[[models]]\nname = "llm"\nurl = "{hub.url}/files/cold-{sid}/tiny.gguf"\n'
            f'sha256 = "{d.sha256_file(gguf)}"\nsize = {gguf.stat().st_size}\n')
        env = compose_env(HF_ENDPOINT=hub.url, SEEDER_ALLOW_HTTP="1", MANIFEST_DIR="deploy",
                          TEST_SEEDER_IMAGE=images[0], TEST_APP_IMAGE=images[1])
        stack = Stack(ctx, env, *images, hub, models=None)  # type: ignore[arg-type]
        try:
            with stack.project(f"seedertest{sid}cold") as c:
                c("up", "--build", "-d", "--wait", timeout=1800)
                served = hub.file_bytes()
                assert sum(served.values()) <= 1.02 * total, (served, total)
                assert http_get(c.url + "/healthz")[0] == 200
                summary = [e for e in events(c.logs("seeder")) if e.get("event") == "summary"][-1]
                assert summary["bytes_downloaded"] == 0  # the volume was filled from the image's copy
                volume = next(m["Name"] for m in c.container("seeder")["Mounts"] if m["Destination"] == "/models")
                got = {p: v[0] for p, v in volume_files(volume)["files"].items()}
                assert got == {**{f"emb/{p}": d.sha256_file(f) for p, f in first.items()},
                               "llm/tiny.gguf": d.sha256_file(gguf)}

                # The host stores the models once: they are in layers both images share.
                unique = unique_sizes(*images)
                assert len(unique) == 2 and all(size < total / 2 for size in unique.values()), unique
                assert inspect(images[0])["Size"] > total and inspect(images[1])["Size"] > total

                # The repo's main moves on: a new model.safetensors, the rest unchanged.
                hub.container.stop()
                changed = d.add_repo(data, repo, {"model.safetensors": d.make_safetensors(
                    src / "2" / "model.safetensors", seed=base + 2, floats=1 << 18)},
                    hashlib.sha1(f"{sid}-2".encode()).hexdigest())
                extra = d.make_gguf(data / "files" / f"cold-{sid}" / "extra.gguf", seed=base + 3)
                with run_hub(hub_image, data, engine, port=hub.port) as moved:
                    c("run", "--rm", "seeder", "refresh")
                    fetched = moved.file_bytes()
                    assert list(fetched) == [next(p for p in fetched if p.endswith("/model.safetensors"))], fetched
                    assert sum(fetched.values()) <= 1.02 * changed["model.safetensors"].stat().st_size + (64 << 10)
                    assert c("run", "--rm", "seeder", "verify", check=False).returncode == 0

                    # The image predates a manifest that adds a model: only that model is downloaded.
                    conf = tmp_path / "conf"
                    conf.mkdir(mode=0o755)
                    (conf / "models.toml").write_text((ctx / "deploy" / "models.toml").read_text() + (
                        f'\n[[models]]\nname = "extra"\nurl = "{hub.url}/files/cold-{sid}/extra.gguf"\n'
                        f'sha256 = "{d.sha256_file(extra)}"\nsize = {extra.stat().st_size}\n'))
                    moved.clear()
                    c("run", "--rm", "-v", f"{conf}:/etc/seeder:ro", "seeder")
                    assert moved.file_bytes() == {f"/files/cold-{sid}/extra.gguf": extra.stat().st_size}
        finally:
            docker("rmi", *images, check=False)


# ==================================================================================================
# 2c: a refresh lasts until the image brings another committed lock (#21)
# ==================================================================================================


@docker_test
def test_a_refresh_in_compose_lasts_until_the_image_brings_a_new_lock(hub_image, engine, sid, tmp_path):
    """The seeder image carries a committed models.lock in a read-only directory: `compose run seeder
    refresh` keeps its lock in the volume, and the next `up` keeps the refreshed model (it reverted it);
    the same with the bind-mounted ./models. An image rebuilt with a new committed lock wins."""
    data, src, base = tmp_path / "data", tmp_path / "src", int(sid, 16) + 200
    repo = f"lasts-{sid}/emb"

    def move_main(n: int) -> str:
        commit = hashlib.sha1(f"{sid}-lasts-{n}".encode()).hexdigest()
        d.add_repo(data, repo, {**d.tiny_repo_files(base), "model.safetensors": d.make_safetensors(
            src / str(n) / "model.safetensors", seed=base + n)}, commit)
        return commit

    def app_commit(c: Compose) -> str:
        status, listed = http_get(c.url + "/models")
        assert status == 200, listed
        return {m["name"]: m["commit"] for m in listed}["emb"]

    first = move_main(1)
    ctx = copy_checkout(tmp_path / "ctx")
    manifest = ctx / "deploy" / "models.toml"
    manifest.parent.mkdir(exist_ok=True)
    manifest.write_text(f'[[models]]\nname = "emb"\nrepo = "{repo}"\nrevision = "main"\n')
    port = free_port()  # one hub address for the whole test: it restarts to serve each move of main
    images = f"seeder-test-{sid}-lasts-seeder", f"seeder-test-{sid}-lasts-app"
    env = compose_env(HF_ENDPOINT=f"http://{engine}:{port}", SEEDER_ALLOW_HTTP="1", MANIFEST_DIR="deploy",
                      TEST_SEEDER_IMAGE=images[0], TEST_APP_IMAGE=images[1])
    stack = Stack(ctx, env, *images, hub=None, models=None)  # type: ignore[arg-type]
    uid = 12345 if os.getuid() == 0 else os.getuid()
    host_dir = tmp_path / "models"
    host_dir.mkdir()
    os.chown(host_dir, uid, uid)

    def lock_on_the_host(upgrade: bool) -> None:
        run = run_seeder("lock", *(["--upgrade"] if upgrade else []), "-m", str(manifest),
                         env=seeder_env(f"http://127.0.0.1:{port}", SEEDER_ALLOW_HTTP="1"))
        assert run.code == 0, run

    try:
        with stack.project(f"seedertest{sid}lasts") as c, \
                stack.project(f"seedertest{sid}lastsbind", "compose.bind.yml", MODELS_HOST_DIR=str(host_dir),
                              SEEDER_UID=str(uid), SEEDER_GID=str(uid)) as bind:
            with run_hub(hub_image, data, engine, port=port):
                lock_on_the_host(upgrade=False)  # committed, baked into both images: it pins the first commit
                c("up", "--build", "-d", "--wait", timeout=1800)
                bind("up", "-d", "--wait")
                assert app_commit(c) == app_commit(bind) == first

            second = move_main(2)  # the repo's main moves on
            with run_hub(hub_image, data, engine, port=port):
                for project in (c, bind):
                    project("run", "--rm", "seeder", "refresh")
                    project("down")  # the volume (or ./models) stays: the next `up` is a plain run
                    project("up", "-d", "--wait")
                    assert app_commit(project) == second, project.name  # it reverted to the first
                    [used] = [e for e in events(project.logs("seeder")) if e.get("event") == "using lock"]
                    assert used["path"] == "/models/.seeder/models.lock", used
                    assert "the target's own lock: `seeder refresh` kept it" in used["why"], used
                assert (host_dir / ".seeder" / "models.lock").exists()

                # status says so, and how to make it permanent; through Compose the lock comes out on stdout
                status = c("run", "--rm", "-T", "seeder", "status").stdout
                assert f"ahead of /etc/seeder/models.lock, which pins {first[:12]}" in status, status
                assert "docker compose run --rm -T seeder lock --from-target --output - > models.lock" in status
                taken = c("run", "--rm", "-T", "seeder", "lock", "--from-target", "--output", "-").stdout
                assert [m["commit"] for m in json.loads(taken)["models"]] == [second]

            # main moves again, the host locks it and the image is rebuilt with that lock: it wins
            third = move_main(3)
            with run_hub(hub_image, data, engine, port=port):
                lock_on_the_host(upgrade=True)
                c("up", "--build", "-d", "--wait", timeout=1800)
                assert app_commit(c) == third
                [used] = [e for e in events(c.logs("seeder")) if e.get("event") == "using lock"]
                assert used["path"] == "/etc/seeder/models.lock" and "the given lock wins" in used["why"], used
    finally:
        docker("rmi", *images, check=False)
        shutil.rmtree(host_dir, ignore_errors=True)


# ==================================================================================================
# 3: a failing seeder keeps the app from starting
# ==================================================================================================


@docker_test
@pytest.mark.parametrize("failure", ["hub-down", "checksum"])
def test_seeder_failure_keeps_the_app_down(stack, fakehub, sid, failure):
    env = {}
    if failure == "hub-down":
        env["HF_ENDPOINT"] = f"http://{fakehub.gateway}:{free_port()}"  # nothing listens there
        code, why = 3, "Connection refused"
    else:
        # Every download of the GGUF arrives with one byte flipped: seeder retries once, then gives up.
        # (Without its bundled copy: the image carries verified bytes, which need no download.)
        fakehub.fault(match=d.GGUF_FILE, kind="corrupt", times=10)
        env["TEST_SEEDER_CACHE"] = ""
        code, why = 1, "sha256"
    try:
        with stack.project(f"seedertest{sid}fail{failure.replace('-', '')}", **env) as c:
            up = c("up", "-d", check=False)
            assert up.returncode != 0
            assert f'service "seeder" didn\'t complete successfully: exit {code}' in up.stderr, up.stderr
            assert c.container("seeder")["State"]["ExitCode"] == code
            app = c.container("app")  # compose creates it, but must never start it
            assert app is None or (app["State"]["Status"] == "created"
                                   and app["State"]["StartedAt"].startswith("0001-01-01"))
            errors = [e for e in events(c.logs("seeder")) if e.get("level") == "error"]
            assert errors and errors[-1]["exit_code"] == code and why in errors[-1]["event"], errors
    finally:
        fakehub.clear_faults()


# ==================================================================================================
# 4: app image builds: an app change fetches nothing; a new model fetches only its own bytes
# ==================================================================================================


def layers(image: str) -> list[str]:
    return inspect(image)["RootFS"]["Layers"]


@docker_test
def test_app_builds_fetch_each_model_once(fakehub, models, sid, tmp_path):
    ctx = copy_checkout(tmp_path / "ctx")
    manifest = models.manifest("small", "tinyllm").replace("{hub}", fakehub.url)
    (ctx / "models.toml").write_text(manifest)
    lock_on_host(ctx, fakehub)  # committed lock: builds then make no API call at all
    tags = [f"seeder-test-{sid}-build{i}" for i in (1, 2, 3)]
    try:
        fakehub.clear()
        build(ctx, tags[0], *hub_args(fakehub))
        models.assert_fetched(fakehub.file_bytes(), "small", "tinyllm")

        # only app code changes: the models stage is not even run
        server = ctx / "app" / "server.py"
        server.write_text(server.read_text() + "\n# a change to the app, nothing else\n")
        fakehub.clear()
        build(ctx, tags[1], *hub_args(fakehub))
        assert fakehub.log() == []
        first, second = layers(tags[0]), layers(tags[1])
        assert first[:-1] == second[:-1] and first[-1] != second[-1]  # same model layer, new app layer

        # one model added (and locked, as a developer would): only its bytes are downloaded
        (ctx / "models.toml").write_text(manifest + "\n" + models.manifest("reranker"))
        lock_on_host(ctx, fakehub)
        fakehub.clear()
        build(ctx, tags[2], *hub_args(fakehub))
        models.assert_fetched(fakehub.file_bytes(), "reranker")
        assert all(r["kind"] != "api" for r in fakehub.log())
    finally:
        docker("rmi", *tags, check=False)


@docker_test
def test_compose_hf_cache_example_apps_load_by_id(stack, fakehub, sid, tmp_path):
    """compose.hf.yml: the volume is an HF_HOME, and the app loads the embedding model by id, offline."""
    (stack.ctx / "hfdeploy").mkdir(exist_ok=True)
    (stack.ctx / "hfdeploy" / "models.toml").write_text('layout = "hf-cache"\n\n' + stack.models.manifest("embedding", "llm"))
    images = {"TEST_SEEDER_IMAGE": f"seeder-test-{sid}-hfseeder", "TEST_APP_IMAGE": f"seeder-test-{sid}-hfapp"}
    try:
        with stack.project(f"seedertest{sid}hf", "compose.hf.yml", MANIFEST_DIR="hfdeploy", **images) as c:
            c("up", "-d", "--build", "--wait")
            assert c.container("seeder")["State"]["ExitCode"] == 0
            status, listed = http_get(c.url + "/models")
            assert status == 200, listed
            by_name = {m["name"]: m for m in listed}
            assert by_name["embedding"]["loaded_by_id"] == d.MINILM_COMMIT  # no path, no revision: refs/main
            assert by_name["embedding"]["path"].startswith("/app/models/hub/models--")
            assert by_name["llm"]["path"] == "/app/models/llm"
            app = c.container("app")["Config"]["Env"]
            assert "HF_HOME=/app/models" in app and "HF_HUB_OFFLINE=1" in app
    finally:
        docker("rmi", *images.values(), check=False)


@docker_test
def test_the_slim_app_image_builds_without_a_hub_and_holds_no_model(hub_image, engine, sid, tmp_path):
    ctx = copy_checkout(tmp_path / "ctx")
    data = tmp_path / "hub"
    # content no earlier build saw, so that no BuildKit cache mount can stand in for the hub
    model = d.make_safetensors(tmp_path / "src" / "model.safetensors", seed=int(sid, 16) + 7)
    commit = hashlib.sha1(f"slim-{sid}".encode()).hexdigest()
    d.add_repo(data, f"slim-{sid}/emb", {**d.tiny_repo_files(int(sid, 16) + 7), "model.safetensors": model}, commit)
    with run_hub(hub_image, data, engine) as hub:
        (ctx / "models.toml").write_text(f'[[models]]\nname = "emb"\nrepo = "slim-{sid}/emb"\nrevision = "{commit}"\n')
        lock_on_host(ctx, hub)  # a committed lock, as for any build
        gone = hub_args(hub)
    # The hub is stopped: nothing answers at HF_ENDPOINT any more.
    tags = f"seeder-test-{sid}-slim", f"seeder-test-{sid}-nohub"
    try:
        build(ctx, tags[0], "--target", "slim", *gone)
        # The default target, from the same context and arguments, does need the hub: its build fails.
        bundled = build(ctx, tags[1], *gone, check=False)
        assert bundled.returncode != 0 and "connection refused" in bundled.stdout + bundled.stderr, bundled.stderr[-3000:]

        names = sorted({Path(f["path"]).name for m in json.loads((ctx / "models.lock").read_text())["models"]
                        for f in m["files"]})
        script = f"names = {names!r}\n" + r"""
import json, os
found = []
for top in ("/app", "/opt", "/etc", "/usr/local", "/tmp", "/models", "/root", "/var"):
    for dirpath, dirs, files in os.walk(top):
        found += [os.path.join(dirpath, f) for f in files
                  if f in names or f.endswith((".safetensors", ".gguf")) or "/.seeder" in dirpath]
print(json.dumps({"app_models": os.path.exists("/app/models"), "found": found}))
"""
        out = docker("run", "--rm", "--network", "none", "--entrypoint", "python", tags[0], "-c", script)
        assert json.loads(out.stdout) == {"app_models": False, "found": []}, out.stdout
        config = inspect(tags[0])["Config"]
        assert config["User"] == f"{SEEDER_UID}:{SEEDER_UID}" and "MODELS_DIR=/app/models" in config["Env"]
        assert config["Cmd"] == ["python", "-m", "app"]
    finally:
        docker("rmi", *tags, check=False)


# ==================================================================================================
# 5: the app image runs air-gapped
# ==================================================================================================


@docker_test
def test_both_images_carry_oci_labels(stack):
    for image, title in ((stack.seeder_image, "seeder"), (stack.app_image, "seeder reference app")):
        labels = inspect(image)["Config"]["Labels"]
        assert labels["org.opencontainers.image.title"] == title
        assert labels["org.opencontainers.image.version"] and labels["org.opencontainers.image.licenses"]


@docker_test
def test_app_image_runs_with_network_none(stack):
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = (DockerContainer(stack.app_image)
                 .with_kwargs(network_mode="none")
                 .waiting_for(LogMessageWaitStrategy("listening on")))
    container.start()
    try:
        assert list(inspect(container.get_wrapped_container().id)["NetworkSettings"]["Networks"]) == ["none"]

        def get(path: str) -> tuple[int, object]:
            code, out = container.exec(["python", "-c", (
                "import json, urllib.request\n"
                f"r = urllib.request.urlopen('http://127.0.0.1:8000{path}', timeout=5)\n"
                "print(json.dumps([r.status, json.loads(r.read())]))")])
            assert code == 0, out
            return tuple(json.loads(out))

        assert get("/healthz")[0] == 200
        status, listed = get("/models")
        assert status == 200
        reported = {f"{m['name']}/{f['path']}": f["sha256"] for m in listed for f in m["files"]}
        assert reported == stack.models.expected(*stack.names)
        headers = {f["path"]: f["header"] for m in listed for f in m["files"]}
        assert headers["model.safetensors"]["tensors"] == d.MINILM_TENSORS
        assert headers[d.GGUF_FILE] == {"format": "gguf", "version": 3, "tensors": 2, "metadata_kv": 5,
                                        "architecture": "llama", "name": "tiny-test-llm"}
        assert inspect(stack.app_image)["Config"]["User"] == f"{SEEDER_UID}:{SEEDER_UID}"
    finally:
        container.stop()


# ==================================================================================================
# 6: a token given as a build secret is used, and kept out of the image
# ==================================================================================================


@docker_test
def test_token_reaches_the_hub_and_not_the_image(stack, hub_image, engine, models, sid, tmp_path):
    token = f"hf_{secrets.token_hex(20)}"
    # As documented: a file the seeder's uid can read, in a directory only its owner can enter.
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir(mode=0o700)
    token_file = secret_dir / "hf_token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o644)
    ctx = copy_checkout(tmp_path / "ctx")
    (ctx / "models.toml").write_text(models.manifest("private"))
    tag = f"seeder-test-{sid}-gated"
    # The same content as the session's hub, but every repo now needs "Authorization: Bearer <token>".
    with run_hub(hub_image, models.data, engine, token=token) as gated:
        try:
            # Build secret. Without it the hub says no (and nothing is cached, so the next build really runs).
            denied = build(ctx, tag, *hub_args(gated), check=False)
            said = denied.stdout + denied.stderr
            assert denied.returncode != 0 and "is gated: accept its terms at" in said and "HF_TOKEN" in said

            gated.clear()
            built = build(ctx, tag, *hub_args(gated), "--secret", f"id=hf_token,src={token_file}")
            log = gated.log()
            assert token_only_to_the_hub(log)  # every request to the hub carried the token, none to the CDN...
            models.assert_fetched(gated.file_bytes(log), "private")  # ...and got the files
            assert token not in built.stdout + built.stderr  # seeder redacts it in the build log too

            assert token not in docker("history", "--no-trunc", tag).stdout
            assert token not in docker("image", "inspect", tag).stdout
            saved = tmp_path / "image.tar"
            docker("save", "-o", saved, tag)
            hits = scan_for(saved, token.encode(), b"def load_models(")
            assert hits[token.encode()] == []
            # and the scan does look inside the layers: it finds the app's source there
            assert any(hit.endswith("app/app/server.py") for hit in hits[b"def load_models("]), hits
        finally:
            docker("rmi", tag, check=False)

        # Compose secret: HF_TOKEN_FILE reaches the seeder container as /run/secrets/hf_token (which
        # downloads here: its bundled copy is left out).
        gated.clear()
        with stack.project(f"seedertest{sid}token", HF_ENDPOINT=gated.url, HF_TOKEN_FILE=str(token_file),
                           TEST_SEEDER_CACHE="") as c:
            c("up", "-d", "--wait")
            log = gated.log()
            assert token_only_to_the_hub(log)
            models.assert_fetched(gated.file_bytes(log), *stack.names)
            seeder = c.container("seeder")
            assert seeder["State"]["ExitCode"] == 0
            assert token not in json.dumps(seeder) and token not in c.logs("seeder")


# ==================================================================================================
# 7: non-root seeder; the bind-mount variant
# ==================================================================================================


@docker_test
def test_seeder_is_non_root_and_the_bind_variant_fills_a_host_directory(stack, sid, tmp_path):
    assert docker("run", "--rm", "--entrypoint", "id", stack.seeder_image, "-u").stdout.strip() == str(SEEDER_UID)
    assert inspect(stack.seeder_image)["Config"]["User"] == f"{SEEDER_UID}:{SEEDER_UID}"

    # As documented: the seeder runs as the owner of the host directory (here a made-up non-root uid).
    uid = 12345 if os.getuid() == 0 else os.getuid()
    host_dir = tmp_path / "models"
    host_dir.mkdir()
    os.chown(host_dir, uid, uid)
    with stack.project(f"seedertest{sid}bind", "compose.bind.yml", MODELS_HOST_DIR=str(host_dir),
                       SEEDER_UID=str(uid), SEEDER_GID=str(uid)) as c:
        c("up", "-d", "--wait")
        seeder = c.container("seeder")
        assert seeder["State"]["ExitCode"] == 0 and seeder["Config"]["User"] == f"{uid}:{uid}"
        assert [m["Type"] for m in seeder["Mounts"] if m["Destination"] == "/models"] == ["bind"]
        got = host_files(host_dir)
        assert {p: v[0] for p, v in got.items()} == stack.models.expected(*stack.names)  # as in the volume
        assert {v[1] for v in got.values()} == {uid}
        status, listed = http_get(c.url + "/models")
        assert status == 200 and sorted(m["name"] for m in listed) == ["embedding", "llm"]
    shutil.rmtree(host_dir, ignore_errors=True)


# ==================================================================================================
# Day 2: images to an air-gapped host (export-image -> rmi -> load -> run with --network none)
# ==================================================================================================


@docker_test
def test_export_image_then_load_runs_air_gapped(stack, tmp_path):
    import zstandard
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    archive = tmp_path / "images.tar.zst"
    proc = sh(sys.executable, "-m", "seeder", "export-image", stack.app_image, stack.seeder_image,
              "--output", archive, "--log-format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    digest, name = (tmp_path / "images.tar.zst.sha256").read_text().split()
    assert name == archive.name and digest == hashlib.sha256(archive.read_bytes()).hexdigest()

    # Containers of earlier tests (the last `compose up` may still be up) would pin the images.
    for image in (stack.app_image, stack.seeder_image):
        ids = docker("ps", "-aq", "--filter", f"ancestor={image}").stdout.split()
        if ids:
            docker("rm", "-f", *ids)
    docker("rmi", stack.app_image, stack.seeder_image)
    assert docker("image", "inspect", stack.app_image, check=False).returncode != 0
    # What `zstd -dc images.tar.zst | docker load` does on the air-gapped host, streamed.
    load = subprocess.Popen(["docker", "load"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(archive, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as tar:
        shutil.copyfileobj(tar, load.stdin, 1 << 20)
    out, err = load.communicate(timeout=600)
    assert load.returncode == 0, err
    assert stack.app_image.encode() in out and stack.seeder_image.encode() in out

    container = (DockerContainer(stack.app_image).with_kwargs(network_mode="none")
                 .waiting_for(LogMessageWaitStrategy("listening on")))
    container.start()
    try:
        code, out = container.exec(["python", "-c", "import urllib.request; "
                                    "print(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status)"])
        assert code == 0 and out.strip() == b"200"
    finally:
        container.stop()


# ==================================================================================================
# TLS behind a private CA: the bundle reaches the image build as a BuildKit secret
# ==================================================================================================


@docker_test
def test_ca_bundle_as_a_build_secret(engine, sid, tmp_path):
    from tests.test_tls import TlsHub, make_pki

    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki", ips=("127.0.0.1", engine))
    with TlsHub(pki, host=engine) as hub:
        data = d.make_safetensors(tmp_path / "w.safetensors", seed=int(sid, 16) + 9)
        commit = hub.add_repo(f"tls-{sid}/m", {"model.safetensors": data, "config.json": b"{}"})
        (tmp_path / "ctx").mkdir()
        ctx = copy_checkout(tmp_path / "ctx")
        (ctx / "models.toml").write_text(f'[[models]]\nname = "m"\nrepo = "tls-{sid}/m"\nrevision = "{commit}"\n')
        (ctx / "models.lock").unlink(missing_ok=True)
        args = ["--target", "models", "--build-arg", f"HF_ENDPOINT={hub.url}"]

        refused = build(ctx, f"seeder-test-{sid}-tls", *args, check=False)
        assert refused.returncode != 0
        assert "TLS verification failed" in refused.stdout + refused.stderr

        build(ctx, f"seeder-test-{sid}-tls", *args, "--secret", f"id=ca_bundle,src={pki / 'ca.pem'}")
        assert any(r.kind == "resolve" and r.bytes_sent for r in hub.requests)
    history = docker("history", "--no-trunc", f"seeder-test-{sid}-tls").stdout
    assert (pki / "ca.pem").read_text().splitlines()[1] not in history
    docker("rmi", f"seeder-test-{sid}-tls", check=False)


# ==================================================================================================
# Day 2: an offline bundle imported inside the (hardened) seeder container
# ==================================================================================================


@docker_test
def test_import_a_bundle_inside_the_seeder_container(stack, sid, hub, tmp_path):
    from tests.conftest import blob as make_blob

    data = make_blob(300_000, seed=int(sid, 16) % 1000)
    hub.add_repo("org/bundled", {"model.safetensors": data, "config.json": b"{}"})
    (tmp_path / "models.toml").write_text('[[models]]\nname = "bundled"\nrepo = "org/bundled"\n')
    assert run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), hub=hub).code == 0
    bundles = Path(tempfile.mkdtemp(prefix="seeder-bundles-"))  # readable by the container's user
    try:
        os.chmod(bundles, 0o755)
        assert run_seeder("export", "-o", str(bundles / "models.tar.zst"), "-m", str(tmp_path / "models.toml"),
                          "-t", str(tmp_path / "t")).code == 0
        raw = (bundles / "models.tar.zst").read_bytes()
        (bundles / "cut.tar.zst").write_bytes(raw[: len(raw) // 2])
        for f in bundles.iterdir():
            os.chmod(f, 0o644)
        volume = f"seeder-test-{sid}-import"
        hardened = ["run", "--rm", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
                    "--security-opt", "no-new-privileges:true", "-v", f"{volume}:/models",
                    "-v", f"{bundles}:/in:ro", stack.seeder_image]
        try:
            bad = docker(*hardened, "import", "/in/cut.tar.zst", check=False)
            assert bad.returncode == 1 and "truncated or corrupt" in bad.stderr
            docker(*hardened, "import", "/in/models.tar.zst")
            docker(*hardened, "verify", "-m", "/nonexistent.toml")
            assert volume_files(volume)["files"]["bundled/model.safetensors"][0] == sha256_bytes(data)
        finally:
            docker("volume", "rm", "-f", volume, check=False)
    finally:
        shutil.rmtree(bundles)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
