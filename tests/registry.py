"""Real OCI registries for tests: Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1.

``apt-get install -y docker-registry skopeo`` (``.ci/run`` does). Three kinds of access control, as real
registries have them:

- ``none``: anyone pulls and pushes;
- ``basic``: an htpasswd file of bcrypt hashes; every user may do everything;
- ``token``: Bearer tokens from :class:`tests.tokenserver.TokenServer` (``writer`` pulls and pushes,
  ``reader`` only pulls, anonymous pulls unless ``anonymous=set()``; ``lifetime`` of a token in seconds).

In a test::

    from tests.registry import basic_registry, make_registry, registry  # noqa: F401  (fixtures)

    def test_x(basic_registry, tmp_path):
        reg = basic_registry
        manifest_digest = push(reg, "team/tiny:v1", modelpack({"model.safetensors": weights}), reg.credentials)
        ref = f"{reg.host}/team/tiny:v1"
        authfile = reg.docker_config(tmp_path / "docker")      # auths[host] = base64 of user:password
        reg.blob_path(sha256_digest(weights)).write_bytes(b"other bytes")   # the stored copy, corrupted
        reg.kill(); reg.restart()                               # same port, same storage
        reg.requests()                                          # what it answered, in order

    @pytest.mark.parametrize("token_registry", [{"anonymous": set(), "lifetime": 3}], indirect=True)
    def test_y(token_registry): ...   # token_registry.tokens.lifetime may also change mid-test

Every instance gets a fresh port, its own storage, config and logs under its root; the process is stopped
(SIGTERM, then SIGKILL) on exit, on a failed start, and (Linux) if the test process dies.

What distribution 2.8 does that a test may not expect (tests/test_registry_fixture.py shows each):

- It serves a blob's stored bytes unchecked, with the ``Docker-Content-Digest`` it was pushed under.
- It checks a token when a request starts: a download under way outlives the token's expiry.
- It writes its access log (``requests()``) to stdout, a line when a response completes: a response cut
  short by ``kill()`` has none. A refused request (401) is only there: the text log (stderr, ``log``) has
  a warning without the status.
- It answers ``Range`` with 206.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.processes import die_with_parent, free_port
from tests.processes import stop as stop_processes
from tests.tokenserver import READER, USERS, WRITER, TokenServer

MODES = ("none", "basic", "token")
PROBE_AGENT = "seeder-tests-registry-probe"  # the fixture's own readiness checks, left out of requests()
START_TIMEOUT = 30.0  # it listens within ~0.1 s; a loaded CI machine takes longer
STOP_GRACE = 3.0
# bcrypt's lowest cost: distribution checks the hash on every request that carries Basic credentials, and at
# the default cost (10) each costs ~50 ms of CPU.
BCRYPT_ROUNDS = 4

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
MODEL_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
TITLE = "org.opencontainers.image.title"
FILEPATH = "org.cncf.model.filepath"
FILE_METADATA = "org.cncf.model.file.metadata+json"

# The access log (stdout): Apache combined format, one line per request once its response is complete.
_ACCESS = re.compile(r'^(?P<remote>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) [^"]*" '
                     r'(?P<status>\d{3}) (?P<size>\d+|-) "[^"]*" "(?P<agent>[^"]*)"$')


def registry_binary() -> str:
    found = shutil.which("docker-registry")
    if not found:
        pytest.skip("needs Debian's docker-registry: apt-get install -y docker-registry skopeo (.ci/run does)")
    return found


def skopeo_binary() -> str:
    found = shutil.which("skopeo")
    if not found:
        pytest.skip("needs skopeo: apt-get install -y docker-registry skopeo (.ci/run does)")
    return found


@dataclasses.dataclass(frozen=True)
class Request:
    """One request the registry answered (from its access log; no headers, so no credentials)."""

    method: str
    path: str  # with the query
    status: int
    size: int  # bytes of the response body sent
    agent: str


class Registry:
    """One ``docker-registry serve`` with its storage, config and logs under ``root``.

    ``credentials`` is the user that may push (``writer``), ``None`` for ``auth="none"``; ``reader`` only
    pulls where the registry can tell (token), and is as good as the writer under Basic (htpasswd knows no
    permissions). ``anonymous`` and ``lifetime`` go to the token server (``auth="token"``)."""

    def __init__(self, root: Path, *, auth: str = "none", anonymous: frozenset[str] | set[str] = frozenset({"pull"}),
                 lifetime: float = 300, tls: tuple[Path, Path] | None = None) -> None:
        if auth not in MODES:
            raise ValueError(f"auth must be one of {MODES}, not {auth!r}")
        self.root = Path(root)
        self.auth = auth
        self.tls = tls
        """(certificate, key): serve HTTPS (``url`` stays plain http for the fixture's own helpers: don't use it)."""
        self.binary = registry_binary()
        self.storage = self.root / "storage"
        self.config_path = self.root / "config.yml"
        self.access_log = self.root / "logs" / "access.log"
        self.log = self.root / "logs" / "registry.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.tokens: TokenServer | None = None
        if auth == "token":
            self.tokens = TokenServer(self.root / "tokens", anonymous=anonymous, lifetime=lifetime)
        self._log_files: list[Any] = []
        self._log_start = 0

    # -- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, attempts: int = 3) -> Registry:
        """Start on a fresh port and wait until ``/v2/`` answers; a port taken before the bind means another."""
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(parents=True, exist_ok=True)
        if self.tokens is not None:
            self.tokens.start()
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            self._write_config()
            try:
                self._spawn()
                return self
            except _PortTaken:
                self._stop_registry(0)  # the token server stays: its realm is in the next config too
                if attempt == attempts:
                    raise RuntimeError("docker-registry: ports kept being taken\n" + self.log_tail()) from None
            except BaseException:
                self.stop(grace=0)
                raise
        raise AssertionError("unreachable")

    def kill(self) -> None:
        """SIGKILL the registry, as a crash would: responses in flight are cut short. Storage stays."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def restart(self) -> Registry:
        """Start again on the same port with the same storage (after :meth:`kill`, or stopping it first)."""
        self._stop_registry(STOP_GRACE)
        try:
            self._spawn()
        except _PortTaken:
            raise RuntimeError(f"docker-registry: port {self.port} was taken while it was down\n"
                               + self.log_tail()) from None
        return self

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop the registry (SIGTERM, SIGKILL after ``grace``) and the token server; idempotent."""
        self._stop_registry(grace)
        if self.tokens is not None:
            self.tokens.stop()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- what tests use --------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry part of a reference, and the key in a Docker config's ``auths``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def credentials(self) -> tuple[str, str] | None:
        return None if self.auth == "none" else WRITER

    @property
    def reader(self) -> tuple[str, str] | None:
        return None if self.auth == "none" else READER

    def blob_path(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes: write there to corrupt what it serves."""
        algo, _, hexdigest = digest.partition(":")
        return self.storage / "docker/registry/v2/blobs" / algo / hexdigest[:2] / hexdigest / "data"

    def docker_config(self, directory: Path, user: tuple[str, str] | None = None) -> Path:
        """``directory/config.json`` with this registry's credentials (default: :attr:`credentials`)."""
        user = user or self.credentials
        return write_docker_config(directory, {self.host: user} if user else {})

    def requests(self) -> list[Request]:
        """Every request answered so far, in order, across restarts. A request cut off by :meth:`kill` has
        no line: the log is written when a response is complete."""
        out = []
        for line in self.access_log.read_text(errors="replace").splitlines():
            if (m := _ACCESS.match(line)) and m["agent"] != PROBE_AGENT:
                size = m["size"]
                out.append(Request(m["method"], m["path"], int(m["status"]), 0 if size == "-" else int(size),
                                   m["agent"]))
        return out

    def log_tail(self, lines: int = 40) -> str:
        state = "running" if self.running else f"exit {self.proc.poll() if self.proc else '-'}"
        out = [f"--- docker-registry on {self.host} ({state})"]
        for path in (self.log, self.access_log):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError as e:
                text = [f"<{e}>"]
            out.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(out)

    # -- internals -------------------------------------------------------------------------------------

    def _config(self) -> dict:
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},  # a test can make a blob or manifest unknown through the API
                # No job walking the storage at a random moment of a test (on by default: first within the
                # hour, then daily).
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            # The secret signs upload state; fixed per instance so it holds across restart().
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": self._secret()},
        }
        if self.tls is not None:
            config["http"]["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        if self.auth == "basic":
            htpasswd = self.root / "htpasswd"
            htpasswd.write_text(htpasswd_lines({name: pw for name, (pw, _) in USERS.items()}))
            config["auth"] = {"htpasswd": {"realm": "seeder-test-registry", "path": str(htpasswd)}}
        elif self.auth == "token":
            assert self.tokens is not None
            config["auth"] = {"token": {"realm": self.tokens.url, "service": self.tokens.service,
                                        "issuer": self.tokens.issuer,
                                        "rootcertbundle": str(self.tokens.cert_path)}}
        return config

    def _write_config(self) -> None:
        # JSON is YAML: no YAML library, no quoting rules to get wrong.
        self.config_path.write_text(json.dumps(self._config(), indent=2) + "\n")

    def _secret(self) -> str:
        path = self.root / "http-secret"
        if not path.exists():
            path.write_text(secrets.token_hex(16))
        return path.read_text()

    def _spawn(self) -> None:
        out = open(self.access_log, "ab")  # appended: a restart keeps what the last run logged
        err = open(self.log, "ab")
        self._log_files += [out, err]
        self._log_start = err.tell()
        # REGISTRY_* variables override the config file (REGISTRY_HTTP_ADDR=...), and podman's
        # REGISTRY_AUTH_FILE would read as auth.file: none from the developer.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.proc = subprocess.Popen([self.binary, "serve", str(self.config_path)], cwd=self.root, env=env,
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     preexec_fn=die_with_parent())
        self._wait_ready(time.monotonic() + START_TIMEOUT)

    def _wait_ready(self, deadline: float) -> None:
        while True:
            if self.proc is None or self.proc.poll() is not None:
                text = self._new_log()
                if "address already in use" in text:
                    raise _PortTaken()
                raise RuntimeError(f"docker-registry exited with {self.proc.poll() if self.proc else '?'} "
                                   "during start-up\n" + self.log_tail())
            try:
                if self.tls is not None:
                    import ssl

                    conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=2,
                                                       context=ssl._create_unverified_context())
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    conn.request("GET", "/v2/", headers={"User-Agent": PROBE_AGENT})
                    resp = conn.getresponse()
                    resp.read()
                    # Our process answering, not whatever else might listen there: 200, or 401 with auth.
                    if resp.getheader("Docker-Distribution-Api-Version") == "registry/2.0":
                        return
                finally:
                    conn.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry not answering after {START_TIMEOUT:.0f} s\n" + self.log_tail())
            time.sleep(0.02)

    def _new_log(self) -> str:
        with open(self.log, "rb") as fh:
            fh.seek(self._log_start)
            return fh.read().decode(errors="replace")

    def _stop_registry(self, grace: float) -> None:
        if self.proc is not None:
            stop_processes([self.proc], grace)
        for fh in self._log_files:
            fh.close()
        self._log_files.clear()


class _PortTaken(Exception):
    pass


def skopeo(*args: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``skopeo *args`` (text output) blind to the developer's setup: HOME is ``home`` (no
    ~/.docker/config.json, ~/.config/containers), no REGISTRY_AUTH_FILE or XDG_RUNTIME_DIR auth file, and a
    policy that accepts any image, whatever /etc/containers/policy.json says. Pass ``--authfile`` for
    credentials: a password on the command line would be in every failure message."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    policy = home / "policy.json"
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG")}
    env["HOME"] = str(home)
    return subprocess.run([skopeo_binary(), "--policy", str(policy), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


# -- credentials ---------------------------------------------------------------------------------------------


def htpasswd_lines(users: Mapping[str, str]) -> str:
    """An htpasswd file's text: ``user:bcrypt-hash`` lines, as ``htpasswd -B`` writes them."""
    import bcrypt

    return "".join(f"{name}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()}\n"
                   for name, pw in users.items())


def write_docker_config(directory: Path, auths: Mapping[str, tuple[str, str]]) -> Path:
    """``directory/config.json`` as ``docker login`` leaves it (``auths.<host>.auth`` = base64 of
    ``user:password``); entries for other hosts already in the file are kept. For ``DOCKER_CONFIG=directory``,
    ``skopeo --authfile``, ``REGISTRY_AUTH_FILE`` and an imagePullSecret's ``.dockerconfigjson`` alike."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    entries = config.setdefault("auths", {})
    for host, (user, password) in auths.items():
        entries[host] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


# -- artifacts -----------------------------------------------------------------------------------------------


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True)
class Artifact:
    """An artifact's exact bytes: its manifest, config and each file (a raw layer: the file's bytes)."""

    manifest: bytes
    config: bytes
    files: dict[str, bytes]

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def blobs(self) -> dict[str, bytes]:
        """Every blob by digest, config included."""
        out = {sha256_digest(self.config): self.config}
        out.update({sha256_digest(data): data for data in self.files.values()})
        return out


def _role(path: str) -> str:
    if path.endswith((".safetensors", ".gguf", ".bin", ".onnx", ".pt")):
        return "weight"
    if path.endswith((".md", ".txt")) or Path(path).name.upper().startswith("LICENSE"):
        return "doc"
    if path.endswith(".py"):
        return "code"
    return "weight.config"


def modelpack(files: Mapping[str, bytes], *, name: str = "tiny") -> Artifact:
    """A CNCF ModelPack v1 artifact of raw layers, one per file, built by hand: media types by the file's
    role, ``org.cncf.model.filepath`` and ``org.opencontainers.image.title`` (what ORAS clients and CRI-O
    place files by) set to the relative path, and a config valid against the model-spec schema."""
    layers = []
    for path, data in files.items():
        meta = {"name": path, "mode": 0o644, "uid": 0, "gid": 0, "size": len(data),
                "mtime": "2025-01-01T00:00:00Z", "typeflag": 48}
        layers.append({"mediaType": f"application/vnd.cncf.model.{_role(path)}.v1.raw",
                       "digest": sha256_digest(data), "size": len(data),
                       "annotations": {FILEPATH: path, FILE_METADATA: json.dumps(meta, separators=(",", ":")),
                                       TITLE: path}})
    config = json.dumps({
        "descriptor": {"name": name, "createdAt": "2025-01-01T00:00:00Z"},
        "config": {"format": "safetensors"},
        "modelfs": {"type": "layers", "diffIds": [layer["digest"] for layer in layers]},
    }, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": MODEL_ARTIFACT,
        "config": {"mediaType": MODEL_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": layers,
    }, indent=2).encode()
    return Artifact(manifest, config, dict(files))


def oras_client(registry: Registry, user: tuple[str, str] | None = None):
    """An oras-py client for ``registry``, with ``user``'s credentials (the Basic backend for a Basic
    registry: oras-py's token backend cannot answer a Basic challenge)."""
    import oras.client

    client = oras.client.OrasClient(hostname=registry.host, insecure=True,
                                    auth_backend="basic" if registry.auth == "basic" else "token")
    # Every request of oras-py goes through a retry of 5 attempts 3, 5, 11, 29 and 83 s apart, on any
    # exception, a refused login included: a failing test would take minutes to say so. One attempt: the
    # registry is local and started ready.
    once = getattr(type(client).do_request, "__wrapped__", None)
    if once is not None:
        client.do_request = types.MethodType(once, client)
    if user is not None:
        client.auth.set_basic_auth(*user)
    return client


def push(registry: Registry, name: str, artifact: Artifact, user: tuple[str, str] | None = None,
         content_type: str = MANIFEST_TYPE) -> str:
    """Push ``artifact`` to ``registry`` as ``name`` (``repo:tag``) with oras-py, the manifest's exact bytes
    included; returns the digest the registry reports."""
    client = oras_client(registry, user)
    container = client.get_container(f"{registry.host}/{name}")
    if registry.auth == "token":
        _push_token(client, registry, container.api_prefix)
    with tempfile.TemporaryDirectory(prefix="oras-push-") as tmp:
        for digest, data in artifact.blobs.items():
            path = Path(tmp) / digest.replace(":", "-")
            path.write_bytes(data)
            # A blob has no type at the registry (the manifest gives it one): oras-py wants one all the same.
            layer = {"mediaType": "application/octet-stream", "digest": digest, "size": len(data)}
            resp = client.upload_blob(str(path), container, layer)
            if resp.status_code not in (200, 201):
                raise RuntimeError(f"oras-py: blob {digest}: {resp.status_code} {resp.text[:300]}")
    resp = client.do_request(f"{registry.url}/v2/{container.api_prefix}/manifests/{container.tag}", "PUT",
                             data=artifact.manifest, headers={"Content-Type": content_type})
    if resp.status_code != 201:
        raise RuntimeError(f"oras-py: manifest: {resp.status_code} {resp.text[:300]}")
    return resp.headers["Docker-Content-Digest"]


def _push_token(client: Any, registry: Registry, repository: str) -> None:
    """oras-py keeps one token per client and, on a 401, sends the same one again: its first request (a blob
    HEAD) would get it a pull-only token for good. Ask for pull and push up front."""
    import oras.auth.utils

    assert registry.tokens is not None
    header = oras.auth.utils.authHeader({"realm": registry.tokens.url, "service": registry.tokens.service,
                                         "scope": f"repository:{repository}:pull,push"})
    token = client.auth.request_token(header)
    if not token:
        raise RuntimeError(f"oras-py: the token server gave no push token for {repository}")
    client.auth.set_token_auth(token)


# -- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture
def make_registry(tmp_path: Path):
    """``make_registry(auth="none"|"basic"|"token", anonymous=..., lifetime=...)``: a started Registry, stopped
    after the test."""
    started: list[Registry] = []

    def make(auth: str = "none", **options: Any) -> Registry:
        reg = Registry(tmp_path / f"registry-{len(started)}-{auth}", auth=auth, **options)
        started.append(reg)
        return reg.start()

    yield make
    for reg in reversed(started):
        reg.stop()


@pytest.fixture
def registry(make_registry) -> Registry:
    """No access control."""
    return make_registry("none")


@pytest.fixture
def basic_registry(make_registry, request) -> Registry:
    """Basic auth from an htpasswd file (``writer`` and ``reader``)."""
    return make_registry("basic", **getattr(request, "param", {}))


@pytest.fixture
def token_registry(make_registry, request) -> Registry:
    """Bearer tokens from ``registry.tokens``; options through indirect parametrization:
    ``@pytest.mark.parametrize("token_registry", [{"anonymous": set(), "lifetime": 3}], indirect=True)``."""
    return make_registry("token", **getattr(request, "param", {}))


@pytest.fixture(params=MODES)
def any_registry(make_registry, request) -> Registry:
    """The test once per kind of access control."""
    return make_registry(request.param)
