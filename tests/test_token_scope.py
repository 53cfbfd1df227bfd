"""Where the hub token goes, hop by hop, on both transports (http.client, and requests when proxies or a
netrc are in play): to the hub's own origin only, never to a redirect target elsewhere; and how redirects
are followed (bounded, no downgrade to plain http, HEAD stays HEAD). Two real servers on 127.0.0.1 play the
hub and another origin; test_secrets.py and test_cdn.py check the same through the CLI (written against
the mutants tests/mutation found alive, issue #15)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from seeder.errors import RemoteError, UsageError
from seeder.fetch.proxied import RequestsSession
from seeder.fetch.transport import MAX_REDIRECTS, Session, safe
from seeder.settings import Network

TOKEN = "hf_scope_test_token"


class _Handler(BaseHTTPRequestHandler):
    """``/go?to=URL&code=302`` redirects there, ``/loop`` to itself; anything else answers 200 ``ok``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        server: Origin = self.server  # type: ignore[assignment]
        split = urlsplit(self.path)
        server.seen.append((self.command, split.path, self.headers.get("Authorization")))
        query = parse_qs(split.query)
        if split.path == "/loop":
            query = {"to": ["/loop"]}
        if split.path in ("/go", "/loop"):
            self.send_response(int(query.get("code", ["302"])[0]))
            if "to" in query:
                self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(b"ok")

    do_GET = do_HEAD = do_POST = _answer


class Origin(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str, str | None]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def go(self, to: str, code: int = 302) -> str:
        return f"{self.url}/go?to={to}&code={code}"


@pytest.fixture
def origins():
    servers = [Origin(), Origin()]
    for s in servers:
        threading.Thread(target=s.serve_forever, args=(0.01,), daemon=True).start()
    yield servers
    for s in servers:
        s.shutdown()
        s.server_close()


TRANSPORTS = {"http.client": Session, "requests": RequestsSession}


def _fetch(transport: str, net: Network, url: str, method: str = "GET", **kw):
    session = TRANSPORTS[transport](net)
    try:
        with session.request(method, url, {}, **kw) as resp:
            return resp.status_code, resp.url, resp.redirected
    finally:
        session.close()


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_the_token_goes_to_the_hub(transport, origins):
    hub, _ = origins
    assert _fetch(transport, Network(endpoint=hub.url, token=TOKEN), f"{hub.url}/org/m/resolve/main/x")[0] == 200
    assert hub.seen == [("GET", "/org/m/resolve/main/x", f"Bearer {TOKEN}")]


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_no_token_no_authorization(transport, origins):
    hub, _ = origins
    _fetch(transport, Network(endpoint=hub.url), f"{hub.url}/x")
    assert hub.seen == [("GET", "/x", None)]


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_another_origin_never_gets_the_token(transport, origins):
    hub, other = origins
    _fetch(transport, Network(endpoint=hub.url, token=TOKEN), f"{other.url}/x")
    assert other.seen == [("GET", "/x", None)]


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_a_redirect_from_the_hub_elsewhere_drops_the_token(transport, origins):
    hub, other = origins
    status, url, redirected = _fetch(transport, Network(endpoint=hub.url, token=TOKEN), hub.go(f"{other.url}/cdn"))
    assert (status, url, redirected) == (200, f"{other.url}/cdn", True)
    assert hub.seen == [("GET", "/go", f"Bearer {TOKEN}")]
    assert other.seen == [("GET", "/cdn", None)]


def test_a_redirect_within_the_hub_keeps_the_token_and_one_to_it_gets_it(origins):
    hub, other = origins
    net = Network(endpoint=hub.url, token=TOKEN)
    _fetch("http.client", net, hub.go(f"{hub.url}/renamed"))
    assert hub.seen == [("GET", "/go", f"Bearer {TOKEN}"), ("GET", "/renamed", f"Bearer {TOKEN}")]
    hub.seen.clear()
    _fetch("http.client", net, other.go(f"{hub.url}/back"))  # decided per hop, by where each request goes
    assert other.seen == [("GET", "/go", None)] and hub.seen == [("GET", "/back", f"Bearer {TOKEN}")]


def test_no_redirect_no_redirected_flag(origins):
    hub, _ = origins
    assert _fetch("http.client", Network(endpoint=hub.url), f"{hub.url}/x") == (200, f"{hub.url}/x", False)


def test_a_redirect_not_followed_is_the_answer(origins):
    hub, other = origins
    assert _fetch("http.client", Network(endpoint=hub.url), hub.go(f"{other.url}/x"), allow_redirects=False)[0] == 302
    assert _fetch("http.client", Network(endpoint=hub.url), f"{hub.url}/go?code=302")[0] == 302  # no Location
    assert other.seen == []


def test_redirects_are_bounded(origins):
    hub, _ = origins
    with pytest.raises(RemoteError, match="too many redirects"):
        _fetch("http.client", Network(endpoint=hub.url), f"{hub.url}/loop")
    assert len(hub.seen) == MAX_REDIRECTS + 1


@pytest.mark.parametrize("code, method", [(303, "HEAD"), (302, "HEAD"), (303, "GET")])
def test_head_stays_head_across_redirects(code, method, origins):
    hub, _ = origins
    _fetch("http.client", Network(endpoint=hub.url), hub.go("/x", code), method=method)
    assert [m for m, _, _ in hub.seen] == [method, method]


@pytest.mark.parametrize("code, after", [(303, "GET"), (302, "POST"), (307, "POST"), (308, "POST")])
def test_only_a_303_turns_another_method_into_get(code, after, origins):
    hub, _ = origins
    _fetch("http.client", Network(endpoint=hub.url), hub.go("/x", code), method="POST")
    assert [m for m, _, _ in hub.seen] == ["POST", after]


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_a_redirect_to_plain_http_elsewhere_is_refused_before_any_request(transport, origins):
    hub, _ = origins
    with pytest.raises(RemoteError, match="redirected to http://example.invalid/x"):
        _fetch(transport, Network(endpoint=hub.url, token=TOKEN), hub.go("http://example.invalid/x"))
    with pytest.raises(UsageError, match="refusing plain http"):  # asked directly: the caller's mistake
        _fetch(transport, Network(endpoint=hub.url), "http://example.invalid/x")
    assert len(hub.seen) == 1


def test_a_url_said_in_a_message_carries_no_password_query_or_fragment():
    assert safe("https://alice:s3cret@host.example:8443/a/b?X-Sig=abc#frag") == "https://host.example:8443/a/b"
    assert safe("http://[::1]:5000/v2/") == "http://[::1]:5000/v2/"


def test_the_hub_origin_is_scheme_host_and_port():
    net = Network(endpoint="https://Hub.example:8443/")
    assert net.is_hub("https://hub.EXAMPLE:8443/org/m/resolve/main/x")
    assert not net.is_hub("http://hub.example:8443/x")
    assert not net.is_hub("https://hub.example/x")
    assert not net.is_hub("https://hub.example.evil:8443/x")
