"""The one retry policy: which failures are transient, how long to wait, how many attempts.

The single stream, every Range part and the resolver all retry through :func:`retrying`, so a
server's wait is honoured the same way everywhere: ``Retry-After`` first, else the reset of the IETF
``RateLimit`` header (the hub sends ``RateLimit: "resolvers";r=0;t=3`` on a 429, often without
``Retry-After``), else jittered exponential backoff. A rate-limit answer also holds its host: every
request to it waits for the same deadline (:func:`hold`, :func:`not_before`), so the parts of a
download wait once together instead of each spending its attempts. tenacity is imported on first
use: a warm run never retries anything.
"""

from __future__ import annotations

import random
import re
import threading
import time
from urllib.parse import urlsplit
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .. import log
from ..errors import RateLimited, RemoteError, TransientError
from ..settings import Network
from .transport import Response, safe

if TYPE_CHECKING:
    from tenacity import Retrying

# One item of the IETF draft's RateLimit list: a policy name (quoted or a token), then ;key=value parameters.
_ITEM = re.compile(r'\s*(?:"([^"]*)"|([A-Za-z0-9_.*-]+))((?:\s*;\s*[A-Za-z0-9_-]+\s*=\s*[^;,]*)*)')
_PARAM = re.compile(r';\s*([A-Za-z0-9_-]+)\s*=\s*"?([^;,"]*)"?')
_RESOLVE = re.compile(r"([^/]+/[^/]+|[^/]+)/resolve/")  # org/name first: a repo may be called "resolve"
TOKEN_HINT = "an HF_TOKEN raises the hub's rate limits"
RETRY_AFTER_MAX = Network.rate_limit_wait_max  # the default cap; a run passes its SEEDER_RATE_LIMIT_WAIT_MAX


def retry_after(value: str | None, cap: float = RETRY_AFTER_MAX) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date), at most ``cap``; None if unusable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(seconds, 0.0), cap) if seconds == seconds else None  # NaN is no number of seconds


def rate_limit(value: str | None) -> tuple[str, float] | None:
    """(bucket, seconds until its window resets) from a ``RateLimit`` header, for a bucket that ran out.

    ``"resolvers";r=0;t=3`` -> ("resolvers", 3.0). Of several items, the exhausted one (``r=0``, or no
    ``r``) that resets last; None when no item says when an exhausted window resets.
    """
    found = None
    for item in (value or "").split(","):
        m = _ITEM.match(item)
        if not m:
            continue
        params = {k.lower(): v.strip() for k, v in _PARAM.findall(m.group(3))}
        try:
            remaining = float(params.get("r", "0"))
            reset = float(params["t"])
        except (KeyError, ValueError):
            continue
        if remaining <= 0 <= reset < float("inf") and (found is None or reset > found[1]):
            found = (m.group(1) if m.group(1) is not None else m.group(2), reset)
    return found


def transient(status: int, headers: Mapping[str, str], message: str, net: Network,
              url: str | None, requested: str | None = None) -> TransientError:
    """The retryable error for a transient ``status``: with the wait the server asked for, capped at
    ``net.rate_limit_wait_max``, and, for a rate limit, the bucket that ran out (``url``: who answered;
    ``requested``: the URL asked for, when a redirect led to ``url``)."""
    limit = rate_limit(headers.get("RateLimit"))
    asked = retry_after(headers.get("Retry-After"), net.rate_limit_wait_max)
    if asked is None and limit is not None:
        asked = min(limit[1], net.rate_limit_wait_max)
    limited = RateLimited(url, limit[0] if limit else None, requested) if status == 429 or limit else None
    return TransientError(message, asked, limit=limited)


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
    answered = resp.url or url  # after redirects: a CDN's refusal is not the hub's
    where = safe(answered)
    if is_transient(status):
        raise transient(status, resp.headers, f"HTTP {status} from {where}", net, answered,
                        url if answered != url else None)
    if status in (401, 403) and net.auth is not None and (why := net.auth.refusal(answered)):
        raise RemoteError(why)
    if status in (401, 403, 404) and net.is_hub(answered):
        why = hub_refusal(resp.headers, _repo_of(answered, net), net.endpoint, bool(net.token))
        if why:
            raise RemoteError(why)
        if status != 404:
            raise RemoteError(hub_refused(status, where, bool(net.token)))
    if status in (401, 403):  # the hub's advice means nothing to another server
        signed = "; a signed URL may have expired" if urlsplit(answered).query else ""
        raise RemoteError(f"HTTP {status} for {where}: the server refused access{signed}")
    if status == 404:
        raise RemoteError(f"HTTP 404 for {where}: not found")
    raise RemoteError(f"HTTP {status} for {where}")


def hub_refusal(headers, repo: str | None, endpoint: str, token: bool) -> str | None:
    """One line on why the hub refused a repo, read from its ``X-Error-Code``, not the status: the hub
    answers 401 for a missing repo as for a private or gated one, so as not to tell which exist.
    ``headers``: any case-insensitive mapping; None when the answer carries no code we know."""
    code, said = headers.get("X-Error-Code"), headers.get("X-Error-Message") or ""
    name = repo or "the repo"
    page = f"{endpoint}/{repo}" if repo else endpoint
    if code == "GatedRepo":
        if token:
            return (f"{name} is gated and HF_TOKEN has no access to it: accept its terms at {page} "
                    "(HF_TOKEN must belong to an account that accepted them)")
        return (f"{name} is gated: accept its terms at {page} and set HF_TOKEN "
                "(it must belong to an account that accepted them)")
    if said.startswith("Access to this resource is disabled"):
        return f"{name} has been disabled on {endpoint}"
    if code == "RepoNotFound":
        if token:
            return f"{name} not found on {endpoint}: it does not exist, or it is private and HF_TOKEN cannot read it"
        return f"{name} not found on {endpoint}: it does not exist, or it is private and needs HF_TOKEN"
    if said.startswith("Invalid credentials"):
        return f"the hub at {endpoint} rejected HF_TOKEN: invalid credentials"
    return None


def hub_refused(status: int, where: str, token: bool) -> str:
    """A 401/403 from the hub that names no reason: what to check, depending on whether a token was sent."""
    if token:
        return (f"the hub refused access to {where} (HTTP {status}): check that HF_TOKEN may read it "
                "and, for a gated model, that its account accepted the terms")
    return f"the hub refused access to {where} (HTTP {status}): a gated or private repo needs HF_TOKEN"


def _repo_of(url: str, net: Network) -> str | None:
    """The repo id in a hub ``<endpoint>/<repo>/resolve/<rev>/<path>`` URL (``org/name``, or a legacy ``name``)."""
    path, base = urlsplit(url).path, urlsplit(net.endpoint).path.rstrip("/")
    if not path.startswith(base + "/"):
        return None
    m = _RESOLVE.match(path[len(base) + 1:])
    return m.group(1) if m else None


# -- one deadline per host -----------------------------------------------------------------------------------

_holds: dict[tuple[str, str, int | None], float] = {}  # host -> time.monotonic() before which nobody asks it
_holds_mutex = threading.Lock()


def _host(url: str) -> tuple[str, str, int | None]:
    split = urlsplit(url)
    return split.scheme, split.hostname or "", split.port


def hold(url: str, seconds: float) -> bool:
    """No request to ``url``'s host for ``seconds``; True when this starts a wait (none was running)."""
    key, until = _host(url), time.monotonic() + seconds
    with _holds_mutex:
        current = _holds.get(key, 0.0)
        _holds[key] = max(current, until)
        return current <= time.monotonic()


def not_before(url: str) -> float:
    """Seconds to wait before asking ``url``'s host anything (0: go ahead)."""
    with _holds_mutex:
        return max(0.0, _holds.get(_host(url), 0.0) - time.monotonic())


def honour(url: str, sleep: Callable[[float], None] = time.sleep) -> None:
    """Wait out a rate limit another request to ``url``'s host was answered with (it may grow meanwhile)."""
    while (wait := not_before(url)) > 0:
        sleep(wait)


# -- the policy ---------------------------------------------------------------------------------------------

def retrying(net: Network, what: str, model: str, path: str | None = None,
             sleep: Callable[[float], None] = time.sleep, quiet: bool = False, **fields: object) -> Retrying:
    """Attempts of one operation: ``for attempt in retrying(...): with attempt: ...``.

    ``sleep`` lets a caller cut a wait short (a Range part stops when another part failed); ``fields``
    go into the retry warning, a callable evaluated at the time (a part's offset moves between attempts);
    ``quiet`` logs the retries at info (a favour such as an upload to a cache warns once, when it gives up).
    """
    from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return backoff(net, state.attempt_number, getattr(exc, "retry_after", None))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception()
        extra = {k: v() if callable(v) else v for k, v in fields.items()}
        limit: RateLimited | None = getattr(exc, "limit", None)
        if limit is not None:
            started = [hold(u, state.upcoming_sleep) for u in (limit.url, limit.asked) if u is not None]
            if started and not any(started):
                return  # another request to this host announced this wait already
            on_hub = limit.url is None or net.is_hub(limit.url)
            extra.update(rate_limited=True, bucket=limit.bucket, hint=TOKEN_HINT if on_hub and not net.token else None)
        (log.info if quiet else log.warning)("retrying", what=what, model=model, file=path, attempt=state.attempt_number,
                    error=str(exc), wait=round(state.upcoming_sleep, 2), **extra)

    return Retrying(retry=retry_if_exception_type(TransientError), stop=stop_after_attempt(net.attempts),
                    wait=wait, before_sleep=before_sleep, sleep=sleep, reraise=True)
