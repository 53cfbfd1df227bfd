"""What both transports share (:mod:`.transport` on http.client, :mod:`.proxied` on requests): the
response, request bodies, who signs a request, and the rules for redirects."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import BinaryIO
from urllib.parse import urlsplit

from ..errors import RemoteError, UsageError
from ..settings import Network

MAX_REDIRECTS = 10
REDIRECTS = (301, 302, 303, 307, 308)
USER_AGENT = "seeder/0.1"


class Response:
    """Status, headers and a streamed body; closing it before the body ends drops the connection."""

    def __init__(self, status_code: int, headers: Mapping[str, str], url: str, redirected: bool):
        self.status_code = status_code
        self.headers = headers
        self.url = url
        """Where the response came from, after redirects."""
        self.redirected = redirected

    @property
    def is_redirect(self) -> bool:
        return self.status_code in REDIRECTS and "Location" in self.headers

    def chunks(self, size: int) -> Iterator[bytes]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def safe(url: str) -> str:
    """``url`` without user info, query and fragment (signed CDN URLs carry credentials there, and a URL
    may carry a password)."""
    split = urlsplit(url)
    return f"{split.scheme}://{split.netloc.rpartition('@')[2]}{split.path}"


Body = bytes | Callable[[], BinaryIO] | None
"""A request's body: bytes, or a function opening it afresh (a 401 or a redirect may send it twice)."""


def opened(body: Body):
    return body() if callable(body) else body


def auth_headers(net: Network, url: str) -> dict[str, str]:
    if net.auth is not None:
        return net.auth.headers(url)
    # The token goes to the hub itself only, so a redirect to a CDN, elsewhere or to plain http never carries it.
    if net.token and net.is_hub(url):
        return {"Authorization": f"Bearer {net.token}"}
    return {}


def renewed(net: Network, resp, url: str, tried: bool) -> bool:
    """Whether a 401 is worth one more try with the credentials the server's challenge asked for."""
    return (resp.status_code == 401 and net.auth is not None and not tried
            and net.auth.challenged(url, resp.headers.get("WWW-Authenticate")))


def check_redirect(net: Network, url: str) -> None:
    try:
        net.check_url(url)  # a redirect must not downgrade to plain http either
    except UsageError as e:
        raise RemoteError(f"redirected to {safe(url)}: {e}") from None


def reason(exc: BaseException) -> str:
    if isinstance(getattr(exc, "reason", None), str):  # ssl.SSLError: its args start with a bare errno
        return exc.reason[:200]
    # requests (urllib3) nests the useful part several levels down; the last line of the chain is enough.
    text = str(exc.args[0] if exc.args else exc) or type(exc).__name__
    return text.split(": ", 1)[-1][:200]
