"""The boto3 client for S3, made the way AWS users expect, for s3:// caches and s3:// sources alike.

Endpoint, region and credentials come from the standard AWS chain (environment, profiles, web
identity, instance metadata). boto3 is the optional extra ``model-seeder[s3]``, imported only here and
only when an ``s3://`` value is used.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from .errors import UsageError


def client(connect_timeout: float = 10.0, read_timeout: float = 30.0, *, what: str = "s3://"):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise UsageError(f"{what}: s3:// needs boto3: pip install 'model-seeder[s3]'") from None
    custom = endpoint()
    config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                    retries={"max_attempts": 3, "mode": "standard"},
                    # MinIO, SeaweedFS, Ceph: buckets are paths, not host names
                    s3={"addressing_style": "path" if custom else "auto"},
                    signature_version="s3v4")
    return boto3.session.Session().client("s3", config=config)


def endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def error_code(e: Exception) -> str:
    """A botocore ClientError's code ("NoSuchKey", "403", ...); "" for anything else."""
    response = getattr(e, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def split(value: str, what: str) -> tuple[str, str]:
    """``s3://bucket[/key-or-prefix]`` -> (bucket, key-or-prefix without a leading slash)."""
    parts = urlsplit(value)
    bucket = parts.netloc
    if parts.scheme != "s3" or not bucket or parts.query or parts.fragment:
        raise UsageError(f"{what} {value!r}: expected s3://bucket[/prefix]")
    if not (3 <= len(bucket) <= 63) or not all(c.islower() or c.isdigit() or c in "-." for c in bucket):
        raise UsageError(f"{what} {value!r}: {bucket!r} is not a valid bucket name")
    return bucket, parts.path.lstrip("/")
