"""The ``oci`` source when the registry misbehaves, against real registries (tests/registry.py) behind a
forwarding proxy (tests/s3faults.py's FaultProxy works for any HTTP server) where a fault needs time to
strike: killed mid-pull and restarted, a stored blob whose bytes changed, a token that expires while a
download runs, and blob redirects to another host (as registries on S3 or a CDN answer).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import blob, run_seeder, seeder_env, write_manifest
from tests.registry import (  # noqa: F401  (fixtures)
    make_registry,
    modelpack,
    push,
    registry,
    sha256_digest,
    token_registry,
)
from tests.s3faults import FaultProxy

pytestmark = pytest.mark.registry

BIG = blob(16 << 20, seed=7)
FILES = {"config.json": b'{"a": 1}\n', "model.safetensors": BIG}
PARTS = {"SEEDER_MULTIPART_MIN": "1048576", "SEEDER_PART_SIZE": "1048576"}


def manifest(work: Path, host: str) -> Path:
    return write_manifest(work / "models.toml", f'[[models]]\nname = "m"\noci = "{host}/team/m:v1"\n')


def args(work: Path) -> list[str]:
    return ["--manifest", str(work / "models.toml"), "--target", str(work / "models")]


def flip_a_byte(path: Path) -> None:
    """Change what the registry stores under a digest: it serves it unchecked."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def blob_bytes_served(reg, since: int = 0) -> int:
    return sum(r.size for r in reg.requests()[since:] if r.method == "GET" and "/blobs/" in r.path)


def test_a_registry_killed_mid_pull_costs_only_the_remainder(registry, tmp_path):
    push(registry, "team/m:v1", modelpack(FILES))
    with FaultProxy(registry.url) as proxy:
        manifest(tmp_path, proxy.endpoint.removeprefix("http://"))
        assert run_seeder("lock", *args(tmp_path)).code == 0
        slow = proxy.delay("GET", r"/blobs/", 0.25)
        env = seeder_env(None, **PARTS, SEEDER_CONNECTIONS="2", SEEDER_RETRIES="1")
        proc = subprocess.Popen([sys.executable, "-m", "seeder", *args(tmp_path), "--log-format", "json"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while blob_bytes_served(registry) < len(BIG) // 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        registry.kill()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 3, err
        first = blob_bytes_served(registry)
        assert 0 < first < len(BIG)
        registry.restart()
        slow.delay = 0
        before = len(registry.requests())
        run = run_seeder(*args(tmp_path), env=env)
        assert run.code == 0, run
    assert (tmp_path / "models" / "m" / "model.safetensors").read_bytes() == BIG
    # What the first run received (its last parts may have been cut off mid-way: at most one part each
    # of 2 connections) is not asked again.
    again = blob_bytes_served(registry, before)
    assert again <= len(BIG) + len(FILES["config.json"]) - first + 2 * (1 << 20), (again, first)


def test_changed_bytes_in_the_registry_exit_1_and_install_nothing(registry, tmp_path):
    push(registry, "team/m:v1", modelpack(FILES))
    manifest(tmp_path, registry.host)
    assert run_seeder("lock", *args(tmp_path)).code == 0
    flip_a_byte(registry.blob_path(sha256_digest(BIG)))
    run = run_seeder(*args(tmp_path), **PARTS)
    assert run.code == 1, run
    assert "model.safetensors" in run.err.splitlines()[-1]
    assert not (tmp_path / "models" / "m").exists()
    partials = [p for p in (tmp_path / "models" / ".seeder" / "tmp").rglob("*") if p.is_file()]
    assert all(p.stat().st_size < len(BIG) for p in partials)


@pytest.mark.parametrize("token_registry", [{"anonymous": set()}], indirect=True)
def test_a_token_that_expires_during_a_download_is_renewed(token_registry, tmp_path):
    reg = token_registry
    push(reg, "team/m:v1", modelpack(FILES), reg.credentials)
    reg.tokens.lifetime = 1  # from now on: the push above (oras-py, a token for all of it) must not race it
    with FaultProxy(reg.url) as proxy:
        manifest(tmp_path, proxy.endpoint.removeprefix("http://"))
        config = reg.docker_config(tmp_path / "docker")
        host = proxy.endpoint.removeprefix("http://")
        auths = json.loads(config.read_text())["auths"]
        config.write_text(json.dumps({"auths": {host: auths[reg.host]}}))
        proxy.delay("GET", r"/blobs/", 0.4)  # 16 parts, two connections: about 3 s, tokens last 1 s
        run = run_seeder(*args(tmp_path), **PARTS, SEEDER_CONNECTIONS="2", DOCKER_CONFIG=str(config.parent))
        assert run.code == 0, run
        refused = [r for r in proxy.seen("GET", "/blobs/") if r[3] == 401]
    assert (tmp_path / "models" / "m" / "model.safetensors").read_bytes() == BIG
    assert refused, "no request met an expired token: the test proved nothing"
    tokens = [r for r in reg.tokens.requests if r.status == 200]
    assert len(tokens) >= 2
    assert "retrying" not in run.err  # a renewal is not a failure


class _Cdn(BaseHTTPRequestHandler):
    """Serves blobs by digest with Range, and remembers every request's headers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *a) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append(dict(self.headers))
        if self.server.challenge:  # a server elsewhere that asks for credentials: it must get none
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://127.0.0.1:{self.server.server_address[1]}'
                                                 f'/token",service="elsewhere"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = self.server.blobs[self.path.split("?")[0].rsplit("/", 1)[-1]]
        start, end = 0, len(data) - 1
        if rng := self.headers.get("Range"):
            a, _, b = rng.removeprefix("bytes=").partition("-")
            start, end = int(a), min(int(b) if b else end, end)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.wfile.write(data[start:end + 1])


class _Redirector(BaseHTTPRequestHandler):
    """A registry front that answers blob GETs with a 307 to the CDN, and forwards the rest."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *a) -> None:
        pass

    def do_GET(self) -> None:
        if "/blobs/" in self.path and self.headers.get("Authorization"):
            digest = self.path.rsplit("/", 1)[-1]
            self.send_response(307)
            self.send_header("Location", f"http://localhost:{self.server.cdn_port}/b/{digest}?X-Sig=secret")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.forward(self)


@pytest.mark.parametrize("transport", ["http.client", "requests"])
@pytest.mark.parametrize("challenge", [False, True])
@pytest.mark.parametrize("token_registry", [{"anonymous": set()}], indirect=True)
def test_a_blob_redirect_is_followed_without_the_registry_authorization(token_registry, tmp_path, challenge,
                                                                        transport):
    """Both transports (a proxy variable selects requests); a server elsewhere that answers 401 with a
    challenge of its own gets no credentials either, not even at the realm it names."""
    reg = token_registry
    artifact = modelpack(FILES)
    push(reg, "team/m:v1", artifact, reg.credentials)
    cdn = ThreadingHTTPServer(("127.0.0.1", 0), _Cdn)
    cdn.seen, cdn.blobs, cdn.challenge = [], {d: b for d, b in artifact.blobs.items()}, challenge
    with FaultProxy(reg.url) as proxy:
        front = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
        front.cdn_port = cdn.server_address[1]
        front.forward = lambda handler: _forward(handler, proxy.endpoint)
        for server in (cdn, front):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        host = f"127.0.0.1:{front.server_address[1]}"
        config = reg.docker_config(tmp_path / "docker")
        auths = json.loads(config.read_text())["auths"]
        config.write_text(json.dumps({"auths": {host: auths[reg.host]}}))
        manifest(tmp_path, host)
        # A proxy variable for a host nothing asks for: requests does the transport, and NO_PROXY keeps it direct.
        proxied = {"HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost"} if transport == "requests" else {}
        run = run_seeder(*args(tmp_path), **PARTS, DOCKER_CONFIG=str(config.parent), **proxied)
        front.shutdown()
        cdn.shutdown()
    assert not [h for h in cdn.seen if "Authorization" in h or "authorization" in h]
    assert "secret" not in run.err
    if challenge:
        assert run.code == 3 and "HTTP 401" in run.err.splitlines()[-1], run
        return
    assert run.code == 0, run
    assert (tmp_path / "models" / "m" / "model.safetensors").read_bytes() == BIG
    assert len(cdn.seen) >= 16  # the parts came from the CDN


def _forward(handler: BaseHTTPRequestHandler, upstream: str) -> None:
    import http.client
    from urllib.parse import urlsplit

    up = urlsplit(upstream)
    conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
    headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("connection", "keep-alive")}
    conn.request(handler.command, handler.path, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    handler.send_response(resp.status)
    for k, v in resp.getheaders():
        if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
            handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
    conn.close()


def _tar_artifact(members: dict[str, bytes]):
    import io
    import tarfile

    from tests.registry import Artifact

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    layer = out.getvalue()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.cncf.model.manifest.v1+json",
                "config": {"mediaType": "application/vnd.cncf.model.config.v1+json",
                           "digest": sha256_digest(b"{}"), "size": 2},
                "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.tar", "digest": sha256_digest(layer),
                            "size": len(layer)}]}
    return Artifact(json.dumps(manifest).encode(), b"{}", {"layer": layer}), layer


def test_a_bad_tar_layer_is_fetched_once_for_all_its_files_and_installs_none(registry, tmp_path):
    members = {f"shard-{i}.bin": blob(300_000, seed=30 + i) for i in range(5)}
    artifact, layer = _tar_artifact(members)
    push(registry, "team/m:v1", artifact)
    manifest(tmp_path, registry.host)
    assert run_seeder("lock", *args(tmp_path)).code == 0
    flip_a_byte(registry.blob_path(sha256_digest(layer)))
    before = len(registry.requests())
    run = run_seeder(*args(tmp_path))
    assert run.code == 1, run
    assert not (tmp_path / "models" / "m").exists()
    gets = [r for r in registry.requests()[before:] if r.method == "GET" and sha256_digest(layer) in r.path]
    assert len(gets) <= 2, gets  # one download and the one retry after a mismatch: not one per file
    leftovers = [p for p in (tmp_path / "models" / ".seeder" / "tmp").iterdir() if p.is_dir()]
    assert not leftovers, leftovers


def test_cache_prune_removes_layers_unpacked_by_a_killed_run(registry, tmp_path):
    members = {"a.bin": blob(100_000, seed=40), "b.bin": blob(100_000, seed=41)}
    artifact, layer = _tar_artifact(members)
    push(registry, "team/m:v1", artifact)
    manifest(tmp_path, registry.host)
    cache = tmp_path / "cache"
    assert run_seeder(*args(tmp_path), "--cache", str(cache)).code == 0
    # What a run killed while it unpacked leaves (the pid of a process that is gone), and a live one's.
    dead = cache / "tmp" / f"sha256-{sha256_digest(layer)[7:]}.999999999.unpacked"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "a.bin").write_bytes(members["a.bin"])
    live = cache / "tmp" / f"sha256-{sha256_digest(layer)[7:]}.{os.getpid()}.unpacked"
    live.mkdir()
    du = run_seeder("cache", "du", "--cache", str(cache))
    assert du.code == 0, du
    run = run_seeder("cache", "prune", "--cache", str(cache), *args(tmp_path)[:2])
    assert run.code == 0, run
    assert not dead.exists() and live.exists()
