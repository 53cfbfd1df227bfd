"""Errors that end a run, each carrying the exit code the CLI documents."""

from __future__ import annotations

from dataclasses import dataclass

OK = 0
INTEGRITY = 1
USAGE = 2
REMOTE = 3
STORAGE = 4
INTERNAL = 70
INTERRUPTED = 130  # 128 + SIGINT
TERMINATED = 143  # 128 + SIGTERM
OUTPUT_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away (`seq 1e9 | head -1`)

EXIT_CODES_HELP = """\
exit codes:
  0   ok
  1   integrity: checksum or size mismatch, or verify found a problem
  2   usage, manifest or lock error
  3   remote failure after retries (network, HTTP error, auth, not found),
      or --offline with files missing
  4   local storage failure (disk full, permission denied, read-only)
  10  refresh --dry-run --exit-code: something would change
  70  internal error (a bug: please report it)
  130 interrupted (Ctrl-C); 143 terminated (SIGTERM, docker stop): what arrived
      is kept and the next run resumes it
  141 the reader of seeder's output closed it early (seeder status | head):
      seeder stopped quietly"""


class Terminated(KeyboardInterrupt):
    """SIGTERM, as ``docker stop`` sends it: handled like Ctrl-C."""


class SeederError(Exception):
    """Base class: ``str(err)`` is the one-line message shown to the user."""

    exit_code = INTERNAL


class UsageError(SeederError):
    exit_code = USAGE


class ManifestError(UsageError):
    def __init__(self, path: object, message: str, model: str | None = None, field: str | None = None):
        where = str(path)
        if model is not None:
            where += f": model {model!r}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")


class LockError(UsageError):
    pass


class IntegrityError(SeederError):
    exit_code = INTEGRITY


class RemoteError(SeederError):
    exit_code = REMOTE


class StorageError(SeederError):
    exit_code = STORAGE


@dataclass(frozen=True)
class RateLimited:
    """A 429, or a 503 naming a rate-limit bucket that ran out."""

    url: str | None
    """Who answered: every request to its host waits out the same deadline. None: the hub API client's call."""
    bucket: str | None
    """The hub's name for the limit (``api``, ``resolvers``), from the ``RateLimit`` header."""
    asked: str | None = None
    """The URL asked, when a redirect led elsewhere: its host waits too, or the next request to it would
    be sent straight back to the host that is out of breath."""


class TransientError(Exception):
    """Worth retrying: the connection broke, stalled, or the server asked us to come back."""

    def __init__(self, message: str, retry_after: float | None = None, unreachable: bool = False,
                 limit: RateLimited | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.unreachable = unreachable
        """No connection at all (unknown host, refused): other files on that host will fare no better."""
        self.limit = limit


def tls_failure(where: str, exc: BaseException) -> str:
    reason = str(exc).split("] ", 1)[-1][:200]
    return (f"TLS verification failed for {where}: {reason} "
            "(set SEEDER_CA_BUNDLE to your CA bundle if a proxy re-signs traffic)")
