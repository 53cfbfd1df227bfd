"""The environment's say in transport: proxy variables route every request through the proxy, NO_PROXY
exempts hosts, and a netrc file never displaces the hub token."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from tests.conftest import blob, run_seeder, seeder_env, url_entry, write_manifest

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "content-length"}


class _Forward(BaseHTTPRequestHandler):
    """A forward proxy for plain http: takes absolute-form requests, replays them upstream."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def _forward(self) -> None:
        target = urlsplit(self.path)
        self.server.seen.append((self.command, self.path, self.headers.get("Range")))
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream.request(self.command, target.path + (f"?{target.query}" if target.query else ""), headers=headers)
        resp = upstream.getresponse()
        body = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(body))
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        upstream.close()


@pytest.fixture
def proxy():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Forward)
    server.daemon_threads = True
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


BIG = blob(3_000_000, seed=21)
SMALL = blob(50_000, seed=22)
PARTS = {"SEEDER_PART_SIZE": str(1 << 20), "SEEDER_MULTIPART_MIN": str(1 << 20)}


def _manifest(hub, tmp_path):
    hub.enable_cdn()  # LFS files redirect to a second host, as on huggingface.co
    hub.add_repo("org/m", {"model.safetensors": BIG, "config.json": b"{}"})
    url = hub.add_file("small.bin", SMALL)
    return write_manifest(tmp_path / "models.toml",
                          '[[models]]\nname = "m"\nrepo = "org/m"\n\n' + url_entry("s", url, SMALL))


def test_every_request_goes_through_the_proxy(hub, proxy, tmp_path):
    m = _manifest(hub, tmp_path)
    proxy_url = f"http://127.0.0.1:{proxy.server_port}"
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"),
                     env=seeder_env(hub.url, HTTP_PROXY=proxy_url, http_proxy=proxy_url, **PARTS))
    assert run.code == 0, run
    assert (tmp_path / "t" / "m" / "model.safetensors").read_bytes() == BIG
    assert (tmp_path / "t" / "s" / "small.bin").read_bytes() == SMALL
    hub_requests = [r for r in hub.requests if r.method in ("GET", "HEAD")]
    assert hub_requests and len(proxy.seen) >= len(hub_requests)
    paths = [path for _, path, _ in proxy.seen]
    assert any(p.startswith(hub.cdn) for p in paths), paths  # the CDN hop went through it too
    assert sum(1 for _, _, rng in proxy.seen if rng) >= 3  # parts of the 3 MB file, as Range requests


def test_no_proxy_exempts_the_hub(hub, proxy, tmp_path):
    m = _manifest(hub, tmp_path)
    proxy_url = f"http://127.0.0.1:{proxy.server_port}"
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"),
                     env=seeder_env(hub.url, HTTP_PROXY=proxy_url, NO_PROXY="127.0.0.1,127.0.0.2", **PARTS))
    assert run.code == 0, run
    assert (tmp_path / "t" / "m" / "model.safetensors").read_bytes() == BIG
    assert proxy.seen == []


def test_a_netrc_entry_for_the_hub_does_not_replace_the_token(hub, tmp_path):
    # A netrc file selects requests as the transport, and requests would let it override an Authorization header.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine 127.0.0.1 login git password from-netrc\n")
    (home / ".netrc").chmod(0o600)
    m = _manifest(hub, tmp_path)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"),
                     env=seeder_env(hub.url, HOME=str(home), HF_TOKEN="hf_from_env"))
    assert run.code == 0, run
    hub_requests = [r for r in hub.requests if r.server == "hub"]
    assert hub_requests and all(r.auth_value == "Bearer hf_from_env" for r in hub_requests), \
        {r.auth_value for r in hub_requests}
    assert not any(r.auth for r in hub.requests if r.server == "cdn")
