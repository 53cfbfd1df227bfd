"""A fault-injecting reverse proxy in front of a real S3 store (SeaweedFS), for the shared-cache fault tests.

It forwards every request unchanged (SeaweedFS in the tests accepts any signature, so the Host the
client signed does not matter) and can:

- answer chosen requests with a chosen S3 error (``fail("PUT|POST", r"/blobs/", 503, "SlowDown")``);
- delay chosen requests (``delay("GET", r"/blobs/", 2.0)``);
- refuse every connection for a window (``refuse(5.0)``): the listener is closed, open connections are
  cut, and the same port listens again afterwards, as a restarting store does;
- drop request headers before forwarding (``strip_headers("If-None-Match", "If-Match")``): the store then
  answers as one that ignores them does, with a 200 for a conditional PUT it should have refused.

``requests`` records (time.monotonic(), method, path, status) of each request that reached it, and
``stripped`` (method, path, header names) of each request that lost headers on the way.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass
class Rule:
    methods: re.Pattern
    path: re.Pattern
    status: int = 0  # 0: forward (after the delay)
    code: str = ""
    delay: float = 0.0
    times: int | None = None  # None: every matching request

    def matches(self, method: str, path: str) -> bool:
        return bool(self.methods.fullmatch(method) and self.path.search(path)) and self.times != 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.owner.connections.add(self.connection)

    def finish(self) -> None:
        self.server.owner.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:
        try:
            self._handle()
        except OSError:
            self.close_connection = True  # cut by refuse(), or the client went away: as a real store's would be

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        owner: FaultProxy = self.server.owner
        body = self._body()
        path = urlsplit(self.path).path
        rule = owner.rule_for(self.command, path)
        if rule is not None and rule.delay:
            time.sleep(rule.delay)
        if rule is not None and rule.status:
            owner.record(self.command, path, rule.status)
            error = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{rule.code}</Code>'
                     f"<Message>injected by the test proxy</Message></Error>").encode()
            self.send_response(rule.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(error)
            return
        up = urlsplit(owner.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if dropped := [k for k in headers if k.lower() in owner.strip]:
                for k in dropped:
                    del headers[k]
                owner.record_stripped(self.command, path, dropped)
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            owner.record(self.command, path, resp.status)
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            if self.command == "HEAD":
                if resp.getheader("Content-Length") is not None:
                    self.send_header("Content-Length", resp.getheader("Content-Length"))
                self.end_headers()
                return
            length = resp.getheader("Content-Length")
            data = None if length is not None else resp.read()
            self.send_header("Content-Length", length if length is not None else str(len(data)))
            self.end_headers()
            if data is not None:
                self.wfile.write(data)
                return
            while chunk := resp.read(1 << 16):
                self.wfile.write(chunk)
        finally:
            conn.close()


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream
        self.rules: list[Rule] = []
        self.requests: list[tuple[float, str, str, int]] = []
        self.strip: set[str] = set()  # lower-case names of the headers dropped from every request
        self.stripped: list[tuple[str, str, list[str]]] = []
        self.connections: set[socket.socket] = set()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._mutex = threading.Lock()
        self._refusing_until = 0.0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._listen()
        return self

    def __exit__(self, *exc) -> None:
        self._close()

    # -- faults --

    def fail(self, methods: str, path: str, status: int, code: str, times: int | None = None) -> Rule:
        rule = Rule(re.compile(methods), re.compile(path), status, code, times=times)
        self.rules.append(rule)
        return rule

    def delay(self, methods: str, path: str, seconds: float) -> Rule:
        rule = Rule(re.compile(methods), re.compile(path), delay=seconds)
        self.rules.append(rule)
        return rule

    def strip_headers(self, *names: str) -> None:
        self.strip.update(n.lower() for n in names)

    def refuse(self, seconds: float) -> None:
        """Refuse connections for ``seconds`` from now (returns at once), then listen on the same port again.
        Windows that overlap make one longer outage."""
        with self._mutex:
            self._refusing_until = max(self._refusing_until, time.monotonic() + seconds)
        self._close()
        self._reopen_later()

    def _reopen_later(self) -> None:
        timer = threading.Timer(max(0.0, self._refusing_until - time.monotonic()), self._reopen)
        timer.daemon = True
        timer.start()

    def _reopen(self) -> None:
        with self._mutex:
            if self._server is not None:
                return
            if time.monotonic() < self._refusing_until:  # a later window extended this outage
                self._reopen_later()
                return
            self._listen()

    def rule_for(self, method: str, path: str) -> Rule | None:
        with self._mutex:
            for rule in self.rules:
                if rule.matches(method, path):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    def record(self, method: str, path: str, status: int) -> None:
        with self._mutex:
            self.requests.append((time.monotonic(), method, path, status))

    def record_stripped(self, method: str, path: str, names: list[str]) -> None:
        with self._mutex:
            self.stripped.append((method, path, names))

    def seen(self, methods: str = ".*", path: str = "", since: float = 0.0) -> list[tuple[float, str, str, int]]:
        m, p = re.compile(methods), re.compile(path)
        with self._mutex:
            return [r for r in self.requests if r[0] >= since and m.fullmatch(r[1]) and p.search(r[2])]

    # -- the listener --

    def _listen(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        server.daemon_threads = True
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def _close(self) -> None:
        with self._mutex:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        for conn in list(self.connections):  # a restarting store drops its connections too
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
