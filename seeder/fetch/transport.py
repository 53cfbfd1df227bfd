"""HTTP for file bytes: GET and HEAD with keep-alive, redirects, timeouts and verified TLS.

Downloads go over the standard library's ``http.client``: importing requests
takes ~70 ms, which was most of a cold run's time before its first byte, and a
file download needs little of it. When the environment has proxy variables or a
netrc file, :func:`new_session` returns a requests session instead, which
implements those. Either way callers get a :class:`Response`, and a connection
that breaks mid-body surfaces as :class:`~seeder.errors.TransientError`.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from functools import cache
from typing import TYPE_CHECKING
from urllib.parse import quote, urljoin, urlsplit

from ..errors import RemoteError, TransientError, UsageError, tls_failure
from ..settings import Network, Parts
from .exchange import (MAX_REDIRECTS, REDIRECTS, USER_AGENT, Body, Response, auth_headers, check_redirect, opened,
                       reason, renewed, safe)

if TYPE_CHECKING:
    from .proxied import RequestsSession

    AnySession = Session | RequestsSession

__all__ = ["Body", "Client", "Response", "Session", "give_up_on", "safe", "tls_context"]

DRAIN_MAX = 64 << 10  # a redirect's body up to this size is read so its connection can be reused
UPLOAD_BLOCK = 1 << 20  # http.client sends a file body in blocks of this size (its default, 8 KiB, costs CPU)
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"  # what requests leaves alone when it re-quotes a URL


def environment_matters() -> bool:
    """Whether proxy variables or a netrc file are present: then requests does the transport."""
    # What urllib.request.getproxies() reads on Linux, without importing it (~25 ms) before the first byte.
    if any(k.lower().endswith("_proxy") and v for k, v in os.environ.items()) or os.environ.get("NETRC"):
        return True
    home = os.path.expanduser("~")
    return any(os.path.exists(os.path.join(home, name)) for name in (".netrc", "_netrc"))


class Client:
    """One per run; each thread gets its own session so connections are reused."""

    def __init__(self, net: Network, parts: Parts | None = None):
        self.net = net
        self.parts = parts or Parts()
        self._local = threading.local()
        self._proxied = environment_matters()

    @property
    def session(self) -> AnySession:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self.new_session()
        return session

    def new_session(self) -> AnySession:
        """A session of its own (one keep-alive connection per host), e.g. for one part worker."""
        if self._proxied:
            from .proxied import RequestsSession

            return RequestsSession(self.net)
        return Session(self.net)

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                session: AnySession | None = None, allow_redirects: bool = True, body: Body = None) -> Response:
        return (session or self.session).request(method, url, headers or {}, allow_redirects=allow_redirects,
                                                 body=body)


@cache
def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Verification settings for every client in a run: ``ca_bundle`` (a file or a directory) or certifi's."""
    if not ca_bundle:
        import certifi  # requests' default trust store, so both transports agree

        return ssl.create_default_context(cafile=certifi.where())
    try:
        if os.path.isdir(ca_bundle):
            return ssl.create_default_context(capath=ca_bundle)
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"CA bundle {ca_bundle}: cannot load it ({reason(e)})") from None


class _Body(Response):
    def __init__(self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection, url: str, redirected: bool):
        super().__init__(resp.status, resp.headers, url, redirected)
        self._resp, self._conn = resp, conn
        self._closed = False

    def chunks(self, size: int) -> Iterator[bytes]:
        while True:
            try:
                data = self._resp.read(size)
            except (OSError, http.client.HTTPException) as e:
                raise TransientError(f"{type(e).__name__}: {reason(e)}") from None
            if not data:
                return
            yield data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        resp = self._resp
        if not resp.isclosed() and resp.length is not None and resp.length <= DRAIN_MAX:
            try:
                resp.read()
            except (OSError, http.client.HTTPException):
                pass
        if not resp.isclosed() or resp.will_close:
            resp.close()  # with Connection: close, http.client has handed the socket to the response
            self._conn.close()  # the rest of the body is still on the wire: this connection is done


class Session:
    """One thread's keep-alive connections, one per scheme, host and port."""

    def __init__(self, net: Network):
        self.net = net
        self._conns: dict[tuple[str, str, int | None], http.client.HTTPConnection] = {}
        self._last: dict[tuple[str, str, int | None], _Body] = {}

    def request(self, method: str, url: str, headers: Mapping[str, str], allow_redirects: bool = True,
                body: Body = None) -> Response:
        redirects, tried = 0, False
        while True:
            if redirects:
                check_redirect(self.net, url)
            else:
                self.net.check_url(url)
            resp, conn = self._send(method, url, {**auth_headers(self.net, url), **headers}, body)
            answer = self._last[_key(urlsplit(url))] = _Body(resp, conn, url, bool(redirects))
            if renewed(self.net, answer, url, tried):
                answer.close()
                tried = True
                continue
            if not (allow_redirects and resp.status in REDIRECTS and resp.headers.get("Location")):
                return answer
            location = _header_text(resp.headers["Location"])
            answer.close()
            if redirects == MAX_REDIRECTS:
                raise RemoteError(f"too many redirects fetching {safe(url)}")
            url, redirects = urljoin(url, location), redirects + 1
            if resp.status == 303 and method != "HEAD":
                method, body = "GET", None

    def _send(self, method: str, url: str, headers: dict[str, str], body: Body = None):
        split = urlsplit(url)
        target = quote((split.path or "/") + (f"?{split.query}" if split.query else ""), safe=_URL_SAFE)
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
        for fresh in (False, True):
            conn = self._connection(split, fresh=fresh)
            was_open = conn.sock is not None
            data = opened(body)  # a body that cannot be read is the caller's error, not the network's
            try:
                if not was_open:
                    _connect(conn, split)
                    conn.sock.settimeout(self.net.read_timeout)
                conn.request(method, target, body=data, headers=headers)
                return conn.getresponse(), conn
            except ssl.SSLCertVerificationError as e:
                conn.close()
                raise RemoteError(tls_failure(split.netloc, e)) from None
            except ValueError as e:  # a URL http.client cannot send (control characters, ...)
                conn.close()
                raise RemoteError(f"cannot request {safe(url)}: {e}") from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                # A kept-alive connection the server has since closed: one more try on a new one.
                if was_open and isinstance(e, (ConnectionError, http.client.RemoteDisconnected, ssl.SSLError)):
                    continue
                raise TransientError(f"{type(e).__name__}: {reason(e)}") from None
            finally:
                if hasattr(data, "close"):
                    data.close()
        raise AssertionError("unreachable")

    def _connection(self, split, fresh: bool) -> http.client.HTTPConnection:
        key = _key(split)
        if (previous := self._last.pop(key, None)) is not None:
            previous.close()  # a caller that left a body unread: http.client can't send until it's gone
        conn = self._conns.get(key)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            timeout = self.net.connect_timeout
            if split.scheme == "https":
                conn = http.client.HTTPSConnection(split.hostname, split.port, timeout=timeout,
                                                   context=tls_context(self.net.ca_bundle), blocksize=UPLOAD_BLOCK)
            else:
                conn = http.client.HTTPConnection(split.hostname, split.port, timeout=timeout, blocksize=UPLOAD_BLOCK)
            self._conns[key] = conn
        return conn

    def close(self) -> None:
        for body in self._last.values():
            body.close()
        for conn in self._conns.values():
            conn.close()
        self._last.clear()
        self._conns.clear()


_unreachable: dict[tuple[str, str, int | None], str] = {}  # hosts given up on in this run, and why


def give_up_on(url: str, why: str) -> None:
    """Every request to ``url``'s host fails at once from now on: retrying it per file only costs time."""
    _unreachable[_key(urlsplit(url))] = why


def _connect(conn: http.client.HTTPConnection, split) -> None:
    """Connect, saying in words what failed: people read "cannot resolve host x", not "gaierror: -2"."""
    if (why := _unreachable.get(_key(split))) is not None:
        raise RemoteError(f"{why} (gave up on {split.netloc} earlier in this run)")
    host, port = split.hostname, split.port or (443 if split.scheme == "https" else 80)
    try:
        conn.connect()
    except socket.gaierror:
        raise TransientError(f"cannot resolve host {host}", unreachable=True) from None
    except ConnectionRefusedError:
        raise TransientError(f"connection refused by {host}:{port}", unreachable=True) from None
    except TimeoutError:
        raise TransientError(f"timed out connecting to {host}:{port} (TimeoutError)") from None


def _header_text(value: str) -> str:
    # http.client decodes header bytes as latin-1; a Location is UTF-8 in practice.
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _key(split) -> tuple[str, str, int | None]:
    return split.scheme, split.hostname or "", split.port

