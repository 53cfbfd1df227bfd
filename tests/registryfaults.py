"""A fault-injecting proxy in front of a real registry (tests/registry.py), for the push fault tests.

It passes every request on with its Host header, so distribution builds its upload ``Location`` URLs on the
proxy's address and the whole push keeps going through it. A fault strikes the ``nth`` request (counted
from 1) whose method and path match, once:

- ``status``: answer that status (with a distribution-style error body) instead of passing it on; the
  registry never sees the request;
- ``cut_after``: pass the headers and that many bytes of the body on, then drop both connections without an
  answer, as a network that fails mid-upload does (the registry keeps what it read, or not: its business).

``log`` records (method, path, Content-Range or "", status or "cut") of every request, in order.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_NOT_PASSED = {"connection", "keep-alive", "transfer-encoding", "content-length"}
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset, as a dropped line looks


@dataclass
class Fault:
    method: str
    path: re.Pattern
    nth: int = 1
    status: int | None = None
    cut_after: int | None = None
    matched: int = 0
    fired: bool = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:
        pass

    def do_GET(self) -> None:
        try:
            self._handle()
        except OSError:
            self.close_connection = True

    do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_GET

    def _handle(self) -> None:
        proxy: RegistryFaultProxy = self.server.proxy
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        fault = proxy.strike(self.command, path)
        where = (self.command, path, self.headers.get("Content-Range", ""))
        if fault is not None and fault.cut_after is not None:
            proxy.note(*where, "cut")
            self._cut(self.rfile.read(min(fault.cut_after, length)), length)
            return
        body = self.rfile.read(length)
        if fault is not None and fault.status is not None:
            proxy.note(*where, fault.status)
            error = json.dumps({"errors": [{"code": "UNKNOWN", "message": "injected by the test proxy"}]}).encode()
            self._answer(fault.status, [("Content-Type", "application/json")], error)
            return
        up = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_PASSED}
            headers["Content-Length"] = str(len(body))
            up.request(self.command, self.path, body=body, headers=headers)
            resp = up.getresponse()
            data = resp.read()
            proxy.note(*where, resp.status)
            kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _NOT_PASSED]
            if self.command == "HEAD":
                kept.append(("Content-Length", resp.getheader("Content-Length") or "0"))
            self._answer(resp.status, kept, data)
        finally:
            up.close()

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _cut(self, part: bytes, length: int) -> None:
        """The registry gets the headers and ``part`` of a ``length``-byte body, then both sides lose the line."""
        proxy: RegistryFaultProxy = self.server.proxy
        up = socket.create_connection(("127.0.0.1", proxy.upstream_port), timeout=10)
        head = [f"{self.command} {self.path} HTTP/1.1"]
        head += [f"{k}: {v}" for k, v in self.headers.items() if k.lower() not in _NOT_PASSED]
        head.append(f"Content-Length: {length}")
        up.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + part)
        for sock in (up, self.connection):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            sock.close()
        self.close_connection = True


class RegistryFaultProxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, str, int | str]] = []
        self._mutex = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RegistryFaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fault(self, method: str, path: str, nth: int = 1, *, status: int | None = None,
              cut_after: int | None = None) -> Fault:
        fault = Fault(method, re.compile(path), nth, status, cut_after)
        self.faults.append(fault)
        return fault

    def strike(self, method: str, path: str) -> Fault | None:
        with self._mutex:
            for fault in self.faults:
                if fault.fired or fault.method != method or not fault.path.search(path):
                    continue
                fault.matched += 1
                if fault.matched == fault.nth:
                    fault.fired = True
                    return fault
        return None

    def note(self, method: str, path: str, content_range: str, outcome: int | str) -> None:
        with self._mutex:
            self.log.append((method, path, content_range, outcome))
