"""The ``oci`` source when the registry misbehaves, against real registries (tests/registry.py) behind a
forwarding proxy (tests/s3faults.py's FaultProxy works for any HTTP server) where a fault needs time to
strike: killed mid-pull and restarted, a stored blob whose bytes changed, a token that expires while a
download runs, and blob redirects to another host (as registries on S3 or a CDN answer).
"""

from __future__ import annotations

import json
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
    stored = registry.blob_path(sha256_digest(BIG))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 1
    stored.write_bytes(bytes(data))
    run = run_seeder(*args(tmp_path), **PARTS)
    assert run.code == 1, run
    assert "model.safetensors" in run.err.splitlines()[-1]
    assert not (tmp_path / "models" / "m").exists()
    partials = [p for p in (tmp_path / "models" / ".seeder" / "tmp").rglob("*") if p.is_file()]
    assert all(p.stat().st_size < len(BIG) for p in partials)


@pytest.mark.parametrize("token_registry", [{"anonymous": set(), "lifetime": 1}], indirect=True)
def test_a_token_that_expires_during_a_download_is_renewed(token_registry, tmp_path):
    reg = token_registry
    push(reg, "team/m:v1", modelpack(FILES), reg.credentials)
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


@pytest.mark.parametrize("token_registry", [{"anonymous": set()}], indirect=True)
def test_a_blob_redirect_is_followed_without_the_registry_authorization(token_registry, tmp_path):
    reg = token_registry
    artifact = modelpack(FILES)
    push(reg, "team/m:v1", artifact, reg.credentials)
    cdn = ThreadingHTTPServer(("127.0.0.1", 0), _Cdn)
    cdn.seen, cdn.blobs = [], {d: b for d, b in artifact.blobs.items()}
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
        run = run_seeder(*args(tmp_path), **PARTS, DOCKER_CONFIG=str(config.parent))
        front.shutdown()
        cdn.shutdown()
    assert run.code == 0, run
    assert (tmp_path / "models" / "m" / "model.safetensors").read_bytes() == BIG
    assert len(cdn.seen) >= 16  # the parts came from the CDN
    assert not [h for h in cdn.seen if "Authorization" in h]
    assert "secret" not in run.err


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
