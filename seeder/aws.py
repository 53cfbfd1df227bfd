"""The boto3 client for S3, made the way AWS users expect, for s3:// caches and s3:// sources alike.

Endpoint, region and credentials come from the standard AWS chain (environment, profiles, web
identity, instance metadata). boto3 is the optional extra ``model-seeder[s3]``, imported only here and
only when an ``s3://`` value is used. One client per set of settings serves every bucket: a client
costs megabytes, and a cache list may name hundreds of buckets on one endpoint.
"""

from __future__ import annotations

import functools
import os
from urllib.parse import urlsplit

from .errors import UsageError

# The service's codes for "the bucket or its owner refuses you" and "nothing there"; anything else a
# store answers with 5xx, SlowDown or a dropped connection is worth asking again later.
REFUSALS = frozenset({"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403",
                      "ExpiredToken", "InvalidToken", "AccountProblem", "NoSuchBucket"})
MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
_BUSY = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling",
                   "ThrottlingException", "RequestLimitExceeded", "503", "500"})


def client(connect_timeout: float = 10.0, read_timeout: float = 30.0, *, what: str = "s3://", attempts: int = 3):
    """The shared client; ``attempts`` 1 leaves retrying to the caller (the cache's own policy)."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise UsageError(f"{what}: s3:// needs boto3: pip install 'model-seeder[s3]'") from None
    return _client(connect_timeout, read_timeout, attempts, endpoint())


@functools.cache
def _client(connect_timeout: float, read_timeout: float, attempts: int, custom: str | None):
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                    retries={"total_max_attempts": attempts, "mode": "standard"},
                    # MinIO, SeaweedFS, Ceph: buckets are paths, not host names
                    s3={"addressing_style": "path" if custom else "auto"},
                    signature_version="s3v4", max_pool_connections=32)
    return boto3.session.Session().client("s3", config=config)


def endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def error_code(e: BaseException) -> str:
    """A botocore ClientError's code ("NoSuchKey", "403", ...), also inside boto3's upload error; "" otherwise."""
    response = getattr(e, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    if not code and type(e).__name__ == "S3UploadFailedError" and e.__context__ is not None:
        return error_code(e.__context__)  # it keeps only the text of the ClientError it replaced
    return code


def busy(e: BaseException) -> bool:
    """A store in trouble rather than saying no: a 5xx, SlowDown, throttling, a timeout."""
    status = _status(e)
    return (status is not None and status >= 500) or error_code(e) in _BUSY


def refused(e: BaseException) -> bool:
    """The store said no for good (credentials, permissions, a missing bucket): asking again won't help."""
    return error_code(e) in REFUSALS or type(e).__name__ == "NoCredentialsError"


def describe(e: BaseException) -> str:
    """What went wrong in the store's own words and where, for one line of a message: the error code
    and the endpoint, never a credential or a query string."""
    code = error_code(e)
    host = endpoint_name()
    if code:
        if code == "403":  # a HEAD's answer has no body, so no code of the service's own
            words = "HTTP 403: access denied (wrong credentials, or no permission)"
        elif code.isdigit():
            words = f"HTTP {code}"
        else:
            words = f"{code} (HTTP {status})" if (status := _status(e)) else code
        return f"{words} from {host}"
    kwargs = getattr(e, "kwargs", None) or {}
    url = kwargs.get("endpoint_url") or kwargs.get("proxy_url")
    where = _where(url) if url else host
    name = type(e).__name__
    if name == "EndpointConnectionError":
        return f"connection refused by {where}"
    if name == "ConnectTimeoutError":
        return f"connection to {where} timed out"
    if name == "ReadTimeoutError":
        return f"{where} did not answer in time"
    if name == "ConnectionClosedError":
        return f"{where} closed the connection"
    if name == "NoCredentialsError":
        return "no AWS credentials found (environment, profile, web identity or instance metadata)"
    return f"{name} from {where}"


def endpoint_name() -> str:
    """``host:port`` of the S3 endpoint in use, for messages."""
    return _where(endpoint() or "") or "AWS S3"


def _status(e: BaseException) -> int | None:
    for err in (e, e.__context__):
        if (response := getattr(err, "response", None)) is not None:
            return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def _where(url: str) -> str:
    """``host:port`` of an endpoint or object URL: no path (it may name keys), no query (signatures)."""
    split = urlsplit(url)
    if not split.hostname:
        return ""
    return f"{split.hostname}:{split.port}" if split.port else split.hostname


def bucket_exists(s3, bucket: str) -> bool | None:
    """True or False when the store says; None when it won't tell (a reader without s3:ListBucket)."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as e:
        code = error_code(e)
        if code in ("404", "NoSuchBucket", "NotFound"):
            return False
        return None
    return True


def split(value: str, what: str) -> tuple[str, str]:
    """``s3://bucket[/key-or-prefix]`` -> (bucket, key-or-prefix without a leading slash)."""
    parts = urlsplit(value)
    bucket = parts.netloc
    if parts.scheme != "s3" or not bucket or parts.query or parts.fragment:
        raise UsageError(f"{what} {value!r}: expected s3://bucket[/prefix]")
    if not (3 <= len(bucket) <= 63) or not all(c.islower() or c.isdigit() or c in "-." for c in bucket):
        raise UsageError(f"{what} {value!r}: {bucket!r} is not a valid bucket name")
    return bucket, parts.path.lstrip("/")
