"""Every setting in one table: its flag, environment variable, default, parser and help text.

A value comes from the flag when given, else from the environment, else the default. The CLI
builds its common options and the ``--help`` environment section from :data:`SETTINGS`; every
variable goes through one of the parsers in :mod:`.parsers`, so a bad value always exits 2 naming it.
Imports nothing of seeder but its errors (and the logger, to warn about an unreadable token).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import UsageError
from .parsers import (DEFAULT_ENDPOINT, boolean, choice, endpoint, existing_path, expanded, listing, number, part_size,
                      size, text)

DOCKER_SECRET = Path("/run/secrets/hf_token")
DEFAULT_CONNECTIONS = 8
DEFAULT_PART_SIZE = 16 << 20
DEFAULT_MULTIPART_MIN = 16 << 20
DEFAULT_PUSH_CHUNK = 64 << 20
MAX_CONNECTIONS = 64
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


# -- the table ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    key: str  # the attribute of Settings ("": read where it is used, listed for --help)
    env: tuple[str, ...]  # variables read, first set wins
    default: Any
    parse: Callable[[str, str], Any]
    help: str
    flag: str | None = None
    short: str | None = None
    metavar: str | None = None

    @property
    def is_switch(self) -> bool:
        return self.parse is boolean and self.flag is not None

    @property
    def repeats(self) -> bool:
        return self.parse is listing

    def read(self, name: str, raw: str) -> Any:
        """The value of ``raw``, given as ``name`` (the flag or the variable), flags and variables alike: a pod's
        args are expanded as its env is."""
        return self.parse(name, expanded(name, raw))


S = Setting
SETTINGS: tuple[Setting, ...] = (
    S("manifest", ("SEEDER_MANIFEST",), "models.toml", text, "manifest file", "--manifest", "-m", "PATH"),
    S("target", ("SEEDER_TARGET",), "models", text, "directory to fill", "--target", "-t", "DIR"),
    S("caches", ("SEEDER_CACHE",), (), listing,
      "content-addressed caches, looked up in order: a directory (e.g. a BuildKit cache mount) or "
      "s3://bucket[/prefix] (repeat the flag, or separate with commas)", "--cache", None, "DIR|s3://BUCKET[/PREFIX]"),
    S("cache_write", ("SEEDER_CACHE_WRITE",), True, boolean,
      "upload what comes from the origin to the s3:// caches (0: read only)"),
    S("lease_seconds", ("SEEDER_LEASE_SECONDS",), 60.0, number(0, above=True),
      "seconds without renewal after which another node takes over a download in progress"),
    S("offline", ("HF_HUB_OFFLINE",), False, boolean, "no network: seed from the lock and cache only", "--offline"),
    S("locked", (), False, boolean, "fail (exit 2) if models.lock is missing or out of date", "--locked"),
    S("jobs", (), 4, number(1, 64, integer=True), "files transferred at once (1-64)", "--jobs", None, "N"),
    S("connections", ("SEEDER_CONNECTIONS",), DEFAULT_CONNECTIONS, number(1, MAX_CONNECTIONS, integer=True),
      "parallel Range connections per large file (1: one stream)", "--connections", None, "N"),
    S("part_size", ("SEEDER_PART_SIZE",), DEFAULT_PART_SIZE, part_size, "bytes per Range request (64K or more)"),
    S("multipart_min", ("SEEDER_MULTIPART_MIN",), DEFAULT_MULTIPART_MIN, size,
      "files at least this large are fetched in parts"),
    S("push_chunk", ("SEEDER_PUSH_CHUNK",), DEFAULT_PUSH_CHUNK, part_size,
      "seeder push: a larger file goes up in chunks of this size, resumed after a drop (64K or more)"),
    S("connect_timeout", ("SEEDER_CONNECT_TIMEOUT",), 10.0, number(0, above=True), "seconds to connect"),
    S("read_timeout", ("SEEDER_READ_TIMEOUT",), 30.0, number(0, above=True),
      "seconds without a byte before a read counts as stalled"),
    S("retries", ("SEEDER_RETRIES",), 4, number(0, integer=True),
      "retries of a failed request (N retries: N+1 attempts; 0: one attempt)"),
    S("backoff_max", ("SEEDER_BACKOFF_MAX",), 30.0, number(0), "longest wait between attempts, in seconds"),
    S("rate_limit_wait_max", ("SEEDER_RATE_LIMIT_WAIT_MAX",), 300.0, number(0),
      "longest wait a server may ask for on a 429 or 503 (Retry-After, or the RateLimit header's reset), in seconds"),
    S("grace", ("SEEDER_GRACE",), 5.0, number(0),
      "seconds a replaced model version stays for readers mid-way", "--grace", None, "SECONDS"),
    S("allow_http", ("SEEDER_ALLOW_HTTP",), False, boolean, "allow plain http:// to hosts other than localhost",
      "--allow-http"),
    S("insecure_registries", ("SEEDER_INSECURE_REGISTRIES",), (), listing,
      "registries (host[:port], comma-separated) reached over plain http; localhost always is"),
    S("log_format", ("SEEDER_LOG_FORMAT",), "auto", choice("auto", "json", "console"),
      "auto: JSON lines unless stderr is a terminal", "--log-format", None, "auto|json|console"),
    S("progress_interval", ("SEEDER_PROGRESS_INTERVAL",), 5.0, number(0), "seconds between JSON progress events"),
    S("ca_bundle", ("SEEDER_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"), None,
      existing_path, "CA bundle (file or directory) for TLS"),
    S("endpoint", ("HF_ENDPOINT",), DEFAULT_ENDPOINT, endpoint,
      "Hugging Face endpoint or mirror; huggingface.co URLs follow it too"),
    S("token_file", (), None, text, "read the hub token from this file", "--token-file", None, "PATH"),
    # Read by read_token, in this order after --token-file; listed here for --help.
    S("", ("HF_TOKEN",), None, text, "token for gated or private repos"),
    S("", ("HF_TOKEN_FILE",), None, text, "a file holding the token (then /run/secrets/hf_token, the Docker "
      "secret; then huggingface's own token file)"),
    S("", ("HF_TOKEN_PATH", "HF_HOME"), None, text, "huggingface's own token file (else HF_HOME/token)"),
)


def env_help() -> str:
    import textwrap

    lines = ["environment (a flag wins over its variable):"]
    for s in SETTINGS:
        if not s.env:
            continue
        default = "" if s.default in (None, False, "", ()) else f" (default {show(s.default)})"
        flag = f"; same as {s.flag}" if s.flag else ""
        head = f"  {', '.join(s.env)}"
        body = textwrap.fill(f"{s.help}{default}{flag}", 100, initial_indent=" " * 22, subsequent_indent=" " * 22)
        lines.append(head.ljust(22) + body[22:] if len(head) < 21 else f"{head}\n{body}")
    return "\n".join(lines)


def show(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1 << 20 and value % (1 << 20) == 0:
        return f"{value >> 20}M"
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- what a run uses -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parts:
    """How one large file is split over connections."""

    connections: int = DEFAULT_CONNECTIONS  # for one large file; 1 means a single stream
    part_size: int = DEFAULT_PART_SIZE  # bytes per Range request (smaller near the end)
    multipart_min: int = DEFAULT_MULTIPART_MIN  # smaller files come as one stream

    def multipart(self, size: int) -> bool:
        return self.connections > 1 and size >= max(self.multipart_min, 1)


class Auth(Protocol):
    """Credentials for one server, asked per request (a redirect elsewhere gets none) and on every 401."""

    def headers(self, url: str) -> dict[str, str]: ...

    def challenged(self, url: str, challenge: str | None) -> bool:
        """A 401 for ``url`` with this ``WWW-Authenticate``: True when new credentials are worth one more try."""

    def refusal(self, url: str) -> str | None:
        """The one line for a 401/403 from ``url`` that stood, when ``url`` is this server's."""


@dataclass(frozen=True)
class Network:
    """How to talk to servers. Timeouts are separate so a stalled body is detected quickly."""

    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = field(default=None, repr=False)
    offline: bool = False
    allow_http: bool = False
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    attempts: int = 5  # per request: the first and SEEDER_RETRIES more
    backoff_max: float = 30.0
    rate_limit_wait_max: float = 300.0  # a rate-limited hub asks for the rest of its window: minutes, not seconds
    ca_bundle: str | None = None
    insecure_registries: tuple[str, ...] = ()
    auth: Auth | None = field(default=None, repr=False)
    """Who signs requests instead of the hub token: a registry's (see :mod:`seeder.registry.auth`)."""

    def is_hub(self, url: str) -> bool:
        """Whether ``url`` is on the hub itself (same scheme, host and port): the token goes nowhere else."""
        a, b = urlsplit(url), urlsplit(self.endpoint)
        return (a.scheme.lower(), a.netloc.lower()) == (b.scheme.lower(), b.netloc.lower())

    @property
    def verify(self) -> str | bool:
        return self.ca_bundle or True

    def check_url(self, url: str) -> None:
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise UsageError(f"not an http(s) URL: {split.scheme}://{split.netloc}{split.path}")
        if split.scheme == "http" and not self.allow_http and not is_local(split.hostname or ""):
            raise UsageError(f"refusing plain http:// for {split.hostname}: use https or pass --allow-http")


def is_local(host: str) -> bool:
    return host in _LOCAL_HOSTS or host.startswith("127.")


@dataclass(frozen=True)
class Settings:
    manifest: str
    target: str
    caches: tuple[str, ...]
    cache_write: bool
    lease_seconds: float
    offline: bool
    locked: bool
    jobs: int
    connections: int
    part_size: int
    multipart_min: int
    push_chunk: int
    connect_timeout: float
    read_timeout: float
    retries: int
    backoff_max: float
    rate_limit_wait_max: float
    grace: float
    allow_http: bool
    insecure_registries: tuple[str, ...]
    log_format: str
    progress_interval: float
    ca_bundle: str | None
    endpoint: str
    token_file: str | None

    def network(self) -> Network:
        net = Network(endpoint=self.endpoint, token=read_token(self.token_file), offline=self.offline,
                      allow_http=self.allow_http, connect_timeout=self.connect_timeout,
                      read_timeout=self.read_timeout, attempts=self.retries + 1, backoff_max=self.backoff_max,
                      rate_limit_wait_max=self.rate_limit_wait_max, ca_bundle=self.ca_bundle,
                      insecure_registries=self.insecure_registries)
        net.check_url(self.endpoint)
        return net

    def parts(self) -> Parts:
        return Parts(connections=self.connections, part_size=self.part_size, multipart_min=self.multipart_min)


AWS_CHAIN = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
             "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")
"""The standard AWS chain's variables a pod sets, often from another variable (docs/kubernetes.md)."""


def load(flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``flags`` (None or False: not given), else the environment, else the defaults."""
    flags = flags or {}
    environ = os.environ if environ is None else environ
    values = {}
    for s in SETTINGS:
        if not s.key:
            continue
        given = flags.get(s.key)
        if isinstance(given, str):
            values[s.key] = s.read(s.flag or s.key, given)
        elif isinstance(given, list):  # a repeatable flag
            values[s.key] = tuple(v for raw in given for v in s.read(s.flag or s.key, raw))
        elif given:  # a switch
            values[s.key] = True
        elif var := next((v for v in s.env if environ.get(v) not in (None, "")), None):
            values[s.key] = s.read(var, environ[var])
        else:
            values[s.key] = s.default
    for name in AWS_CHAIN:  # boto3 reads these itself: held to the same rule before it makes a bucket of them
        expanded(name, environ.get(name, ""))
    return Settings(**values)


def read_token(token_file: str | None = None) -> str | None:
    """The hub token: --token-file, HF_TOKEN, HF_TOKEN_FILE, the Docker secret, then huggingface's own token file."""
    if token_file:
        return _read_token_file(Path(token_file), "--token-file")
    if token := _env("HF_TOKEN").strip():
        return token
    if env_file := _env("HF_TOKEN_FILE"):
        return _read_token_file(Path(env_file), "HF_TOKEN_FILE")
    for candidate in (DOCKER_SECRET, _hf_token_path()):
        if candidate.is_file():
            try:
                return candidate.read_text().strip() or None
            except OSError as e:
                # Typically a Compose secret (a bind mount) this uid cannot read: say so, or the only
                # symptom is a 401 later.
                from .. import log

                log.warning("cannot read token file; continuing without a token", path=str(candidate),
                            error=e.strerror or str(e))
    return None


def _hf_token_path() -> Path:
    if path := _env("HF_TOKEN_PATH"):
        return Path(path)
    home = _env("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "token"


def _env(name: str) -> str:
    """A variable the token lookup reads, held to the table's rule on ``$(``."""
    return expanded(name, os.environ.get(name, ""))


def _read_token_file(path: Path, source: str) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError as e:
        raise UsageError(f"{source}: cannot read token file {path}: {e.strerror}") from None
