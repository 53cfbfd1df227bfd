"""The one retry policy: which failures are transient, how long to wait, how many attempts.

The single stream, every Range part and the resolver all retry through :func:`retrying`, so a
``Retry-After`` is honoured the same way everywhere. tenacity is imported on first use: a warm run
never retries anything.
"""

from __future__ import annotations

import random
import time
from urllib.parse import urlsplit
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import log
from ..errors import RemoteError, TransientError
from ..settings import Network
from .transport import Response, safe

if TYPE_CHECKING:
    from tenacity import Retrying

RETRY_AFTER_MAX = 120.0  # a server asking for longer gets this; it is still a retry, not a hang


def retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date), capped; None if unusable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def backoff(net: Network, attempt: int, asked: float | None) -> float:
    """Seconds to wait after failed attempt ``attempt``: exponential with jitter, at least what the server asked."""
    wait = min(net.backoff_max, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
    return max(wait, asked) if asked is not None else wait


def is_transient(status: int) -> bool:
    """Worth asking again: timeouts, too early, rate limits and every server error."""
    return status in (408, 425, 429) or 500 <= status < 600


def classify(resp: Response, url: str, net: Network) -> None:
    """Raise the right error for a non-success response."""
    status = resp.status_code
    if status < 400:
        return
    where = safe(url)
    if is_transient(status):
        raise TransientError(f"HTTP {status} from {where}", retry_after(resp.headers.get("Retry-After")))
    if status in (401, 403) and net.is_hub(url):
        raise RemoteError(f"HTTP {status} for {where}: gated or private: set HF_TOKEN (and accept the model's terms)")
    if status in (401, 403):  # the hub's advice means nothing to another server
        signed = "; a signed URL may have expired" if urlsplit(url).query else ""
        raise RemoteError(f"HTTP {status} for {where}: the server refused access{signed}")
    if status == 404:
        raise RemoteError(f"HTTP 404 for {where}: not found")
    raise RemoteError(f"HTTP {status} for {where}")


def retrying(net: Network, what: str, model: str, path: str | None = None,
             sleep: Callable[[float], None] = time.sleep, **fields: object) -> Retrying:
    """Attempts of one operation: ``for attempt in retrying(...): with attempt: ...``.

    ``sleep`` lets a caller cut a wait short (a Range part stops when another part failed); ``fields``
    go into the retry warning, a callable evaluated at the time (a part's offset moves between attempts).
    """
    from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return backoff(net, state.attempt_number, getattr(exc, "retry_after", None))

    def before_sleep(state: RetryCallState) -> None:
        log.warning("retrying", what=what, model=model, file=path, attempt=state.attempt_number,
                    error=str(state.outcome.exception()), wait=round(state.upcoming_sleep, 2),
                    **{k: v() if callable(v) else v for k, v in fields.items()})

    return Retrying(retry=retry_if_exception_type(TransientError), stop=stop_after_attempt(net.attempts),
                    wait=wait, before_sleep=before_sleep, sleep=sleep, reraise=True)
