"""Run settings from flags and the environment, including where the hub token comes from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import UsageError

DEFAULT_ENDPOINT = "https://huggingface.co"
DOCKER_SECRET = Path("/run/secrets/hf_token")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise UsageError(f"{name}={raw!r} must not be negative")
    return value


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _env_size(name: str, default: int) -> int:
    """A byte count: ``65536``, ``64K``, ``8M``, ``1G`` (powers of 1024)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    text = raw.strip().lower().removesuffix("ib").removesuffix("b")
    unit = text[-1:] if text[-1:] in _UNITS else ""
    try:
        value = int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a size (e.g. 65536, 64K, 8M)") from None
    if value < 1:
        raise UsageError(f"{name}={raw!r} must be at least 1 byte")
    return value


def _env_int(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise UsageError(f"{name}={raw!r} must be between {lo} and {hi}")
    return value


DEFAULT_CONNECTIONS = 8
DEFAULT_PART_SIZE = 16 << 20
DEFAULT_MULTIPART_MIN = 16 << 20
MAX_CONNECTIONS = 64


@dataclass(frozen=True)
class Network:
    """How to talk to servers. Timeouts are separate so a stalled body is detected quickly."""

    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = field(default=None, repr=False)
    offline: bool = False
    allow_http: bool = False
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 5
    backoff_max: float = 30.0
    ca_bundle: str | None = None
    connections: int = DEFAULT_CONNECTIONS
    """Parallel connections for one large file (``Range`` parts); 1 means a single stream."""
    part_size: int = DEFAULT_PART_SIZE
    """Bytes per ``Range`` request of a multi-part download (smaller near the end)."""
    multipart_min: int = DEFAULT_MULTIPART_MIN
    """Files at least this large are fetched in parts; smaller ones as one stream."""

    def multipart(self, size: int) -> bool:
        return self.connections > 1 and size >= max(self.multipart_min, 1)

    def is_hub(self, url: str) -> bool:
        """Whether ``url`` is on the hub itself (same scheme, host and port): the token goes nowhere else."""
        a, b = urlsplit(url), urlsplit(self.endpoint)
        return (a.scheme.lower(), a.netloc.lower()) == (b.scheme.lower(), b.netloc.lower())

    @property
    def verify(self) -> str | bool:
        return self.ca_bundle or True

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"not an http(s) URL: {parts.scheme}://{parts.netloc}{parts.path}")
        if parts.scheme == "http" and not self.allow_http and not _is_local(parts.hostname or ""):
            raise UsageError(f"refusing plain http:// for {parts.hostname}: use https or pass --allow-http")


def _is_local(host: str) -> bool:
    return host in _LOCAL_HOSTS or host.startswith("127.")


def read_token(token_file: str | None = None) -> str | None:
    """Find the hub token: --token-file, HF_TOKEN, HF_TOKEN_FILE, the Docker secret, then huggingface's own token file."""
    if token_file:
        return _read_token_file(Path(token_file), "--token-file")
    if token := os.environ.get("HF_TOKEN", "").strip():
        return token
    if env_file := os.environ.get("HF_TOKEN_FILE"):
        return _read_token_file(Path(env_file), "HF_TOKEN_FILE")
    for candidate in (DOCKER_SECRET, _hf_token_path()):
        if candidate.is_file():
            try:
                return candidate.read_text().strip() or None
            except OSError as e:
                # Typically a Compose secret (a bind mount) this uid cannot read: say so, or the only
                # symptom is a 401 later.
                from . import log

                log.warning("cannot read token file; continuing without a token", path=str(candidate),
                            error=e.strerror or str(e))
    return None


def _hf_token_path() -> Path:
    if path := os.environ.get("HF_TOKEN_PATH"):
        return Path(path)
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "token"


def _read_token_file(path: Path, source: str) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError as e:
        raise UsageError(f"{source}: cannot read token file {path}: {e.strerror}") from None


def network_from_env(*, offline: bool, allow_http: bool, token_file: str | None,
                     connections: int | None = None) -> Network:
    """Settings from the environment; ``connections`` (the ``--connections`` flag) overrides SEEDER_CONNECTIONS."""
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/") or DEFAULT_ENDPOINT
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"HF_ENDPOINT={endpoint!r} is not an http(s) URL")
    offline = offline or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    ca_var = next((v for v in ("SEEDER_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")
                   if os.environ.get(v)), None)
    ca_bundle = os.environ[ca_var] if ca_var else None
    if ca_bundle and not os.path.exists(ca_bundle):
        raise UsageError(f"{ca_var}={ca_bundle}: no such file or directory")
    net = Network(
        endpoint=endpoint,
        token=read_token(token_file),
        offline=offline,
        allow_http=allow_http,
        connect_timeout=env_float("SEEDER_CONNECT_TIMEOUT", 10.0),
        read_timeout=env_float("SEEDER_READ_TIMEOUT", 30.0),
        retries=max(1, int(env_float("SEEDER_RETRIES", 5))),
        backoff_max=env_float("SEEDER_BACKOFF_MAX", 30.0),
        ca_bundle=ca_bundle,
        connections=connections if connections is not None
        else _env_int("SEEDER_CONNECTIONS", DEFAULT_CONNECTIONS, 1, MAX_CONNECTIONS),
        part_size=_env_size("SEEDER_PART_SIZE", DEFAULT_PART_SIZE),
        multipart_min=_env_size("SEEDER_MULTIPART_MIN", DEFAULT_MULTIPART_MIN),
    )
    if net.connect_timeout <= 0 or net.read_timeout <= 0:
        raise UsageError("SEEDER_CONNECT_TIMEOUT and SEEDER_READ_TIMEOUT must be more than 0 seconds")
    if not 1 <= net.connections <= MAX_CONNECTIONS:
        raise UsageError(f"--connections must be between 1 and {MAX_CONNECTIONS}")
    net.check_url(endpoint)
    return net
