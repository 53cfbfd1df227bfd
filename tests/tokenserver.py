"""A Docker registry token server for tests: the ``realm`` a registry with ``auth: token`` sends clients to.

It speaks the token flow of the distribution spec (docs/spec/auth/token.md, jwt.md): ``GET /token?service=S&
scope=repository:NAME:pull,push`` (``scope`` may repeat), with HTTP Basic credentials or none, answers
``{"token", "access_token", "expires_in", "issued_at"}``. Each token is an RS256 JWT with the claims
``iss sub aud exp nbf iat jti access`` and an ``x5c`` header holding the signing certificate, which is
self-signed and written to ``cert_path`` for the registry's ``rootcertbundle``.

Who gets what:

- a user of ``users`` with the right password gets the actions asked for that its grant allows;
- a wrong password, or an unknown user, gets 401 and no token;
- no credentials get the ``anonymous`` actions (``{"pull"}`` by default, ``set()`` for a private registry).
  A request asking for more still gets a token, with the access cut down (possibly to nothing): what Docker
  Hub and Harbor do, so the registry, not the token server, is where a client learns it needs credentials.

``lifetime`` (seconds, changeable at any time) sets how long a token is valid *at the registry*. distribution
2.8 accepts a token up to 60 s past its ``exp`` and before its ``nbf`` (``token.Leeway``, clock skew), so a
lifetime below a minute would be a minute longer than asked. The server takes the leeway off ``exp``: the
registry refuses the token ``lifetime`` seconds after issue. ``expires_in`` says ``lifetime`` as asked.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

SERVICE = "seeder-test-registry"
ISSUER = "seeder-test-tokenserver"
# distribution 2.8, registry/auth/token/token.go: exp and nbf are checked with this much slack.
REGISTRY_LEEWAY = 60
# (user, password): the writer may pull, push and delete; the reader only pull.
WRITER = ("writer", "writer-password-3f9a")
READER = ("reader", "reader-password-81c2")
USERS: dict[str, tuple[str, frozenset[str]]] = {
    WRITER[0]: (WRITER[1], frozenset({"pull", "push", "delete", "*"})),
    READER[0]: (READER[1], frozenset({"pull"})),
}


@dataclass
class TokenRequest:
    """One request the server answered. Never the password or the token: tests print these."""

    user: str | None  # as sent, whether or not the password was right; None: anonymous
    scopes: list[str]
    status: int
    access: list[dict] = field(default_factory=list)  # what the token grants
    at: float = field(default_factory=time.time)


class TokenServer:
    def __init__(self, root: Path, *, users: dict[str, tuple[str, frozenset[str]]] | None = None,
                 anonymous: frozenset[str] | set[str] = frozenset({"pull"}), lifetime: float = 300,
                 service: str = SERVICE, issuer: str = ISSUER) -> None:
        self.root = Path(root)
        self.users = dict(USERS if users is None else users)
        self.anonymous = frozenset(anonymous)
        self.lifetime = lifetime
        self.service = service
        self.issuer = issuer
        self.requests: list[TokenRequest] = []
        self.cert_path = self.root / "token-cert.pem"
        self._key, self._cert_der = self._make_key()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> TokenServer:
        """Listen on a free port of 127.0.0.1; a second call does nothing (the realm must not move)."""
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.owner = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="tokenserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        """The realm: where the registry's ``WWW-Authenticate`` sends clients."""
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    # -- tokens ----------------------------------------------------------------------------------------

    def issue(self, subject: str, access: list[dict], lifetime: float | None = None, *,
              audience: str | None = None, issuer: str | None = None) -> str:
        """A signed token, as the endpoint would issue it; ``audience``/``issuer`` override to forge a bad one."""
        now = int(time.time())
        life = self.lifetime if lifetime is None else lifetime
        claims = {
            "iss": issuer or self.issuer,
            "sub": subject,
            "aud": audience or self.service,  # one string: 2.8's ClaimSet.Audience is not a list
            "exp": now + int(round(life)) - REGISTRY_LEEWAY,
            "nbf": now,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        header = {"x5c": [base64.b64encode(self._cert_der).decode()]}
        return jwt.encode(claims, self._key, algorithm="RS256", headers=header)

    def grant(self, user: str | None, scopes: list[str]) -> list[dict]:
        """The ``access`` claim for ``user`` (None: anonymous) asking for ``scopes``."""
        allowed = self.anonymous if user is None else self.users[user][1]
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a and (a in allowed or "*" in allowed)]
            if kind and name:
                access.append({"type": kind, "name": name, "actions": granted})
        return access

    # -- internals -------------------------------------------------------------------------------------

    def _make_key(self) -> tuple[rsa.RSAPrivateKey, bytes]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.issuer)])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                # From a day ago: the registry checks the chain with its own clock.
                .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        self.root.mkdir(parents=True, exist_ok=True)
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key, cert.public_bytes(serialization.Encoding.DER)

    def _answer(self, authorization: str | None, query: str) -> tuple[int, dict]:
        params = parse_qs(query)
        scopes = [s for value in params.get("scope", []) for s in value.split(" ") if s]
        user: str | None = None
        if authorization:
            user, password = _basic(authorization)
            known = self.users.get(user or "")
            if user is None or known is None or not secrets.compare_digest(known[0], password):
                self._record(TokenRequest(user, scopes, 401))
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        if params.get("service", [self.service])[0] != self.service:
            self._record(TokenRequest(user, scopes, 400))
            return 400, {"errors": [{"code": "DENIED", "message": "unknown service"}]}
        access = self.grant(user, scopes)
        token = self.issue(user or "", access)
        self._record(TokenRequest(user, scopes, 200, access))
        issued = dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
        return 200, {"token": token, "access_token": token, "expires_in": int(round(self.lifetime)),
                     "issued_at": issued}

    def _record(self, req: TokenRequest) -> None:
        with self._lock:
            self.requests.append(req)


def _basic(header: str) -> tuple[str | None, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, ""
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, ""
    return (user, password) if sep else (None, "")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        parts = urlsplit(self.path)
        if parts.path != "/token":
            status, body = 404, {"errors": [{"code": "NOT_FOUND", "message": parts.path}]}
        else:
            status, body = self.server.owner._answer(self.headers.get("Authorization"), parts.query)  # type: ignore[attr-defined]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="seeder-test-tokenserver"')
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:  # requests are kept in TokenServer.requests, not printed
        pass
