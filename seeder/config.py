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


def _env_float(name: str, default: float) -> float:
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

    @property
    def hub_netloc(self) -> str:
        return urlsplit(self.endpoint).netloc

    @property
    def verify(self) -> str | bool:
        return self.ca_bundle or True

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
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
            except OSError:
                continue
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


def network_from_env(*, offline: bool, allow_http: bool, token_file: str | None) -> Network:
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/") or DEFAULT_ENDPOINT
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"HF_ENDPOINT={endpoint!r} is not an http(s) URL")
    offline = offline or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    ca_bundle = next(
        (os.environ[v] for v in ("SEEDER_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE") if os.environ.get(v)),
        None,
    )
    net = Network(
        endpoint=endpoint,
        token=read_token(token_file),
        offline=offline,
        allow_http=allow_http,
        connect_timeout=_env_float("SEEDER_CONNECT_TIMEOUT", 10.0),
        read_timeout=_env_float("SEEDER_READ_TIMEOUT", 30.0),
        retries=max(1, int(_env_float("SEEDER_RETRIES", 5))),
        backoff_max=_env_float("SEEDER_BACKOFF_MAX", 30.0),
        ca_bundle=ca_bundle,
    )
    net.check_url(endpoint)
    return net
