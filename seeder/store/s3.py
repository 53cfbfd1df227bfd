"""A remote content-addressed cache in an S3-compatible bucket, shared by every node of a cluster.

Layout (stable, documented in docs/scale-out.md; nothing else is needed to read it)::

    <prefix>/blobs/sha256/<hex>      exactly the bytes whose sha256 is <hex>
    <prefix>/blobs/gitsha1/<oid>     a small file the hub pins by git blob id only
    <prefix>/leases/<digest>         who is fetching a blob from the origin right now

Credentials, region and endpoint come from the standard AWS chain through boto3 (an optional
extra, imported when an ``s3://`` cache is first used). Reads go through seeder's own Range engine
with presigned URLs (the installer does that; this module only signs). Writes are single PUTs or
multipart uploads, both of which S3 makes visible under the key only once complete. Every failure
here is a :class:`CacheUnavailable`: a cache is an optimisation, so the caller warns and moves on.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import aws, log
from ..spec.lock import LockedFile

PRESIGN_SECONDS = 3600
MULTIPART_THRESHOLD = 64 << 20
_REFUSALS = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403",
             "NoSuchBucket", "ExpiredToken", "InvalidToken"}


class CacheUnavailable(Exception):
    """The bucket cannot be used (unreachable, refused, missing): carry on without it."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


class NoConditionalWrites(Exception):
    """The store ignores or refuses ``If-None-Match``/``If-Match``: no single flight."""


def parse_url(value: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` -> (bucket, prefix with a trailing slash or empty)."""
    bucket, prefix = aws.split(value, "--cache")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def blob_key(digest: str) -> str:
    """``sha256-<hex>`` -> ``blobs/sha256/<hex>``; ``gitsha1-<oid>`` -> ``blobs/gitsha1/<oid>``."""
    kind, _, value = digest.partition("-")
    return f"blobs/{kind}/{value}"


@dataclass
class Lease:
    key: str
    etag: str
    holder: str


class S3Cache:
    def __init__(self, url: str, *, write: bool = True, lease_seconds: float = 60.0,
                 connect_timeout: float = 10.0, read_timeout: float = 30.0):
        self.url = url
        self.bucket, self.prefix = parse_url(url)
        self.write = write
        self.lease_seconds = lease_seconds
        self.timeouts = (connect_timeout, read_timeout)
        self._client = None
        self._client_mutex = threading.Lock()
        self.usable = True

    # -- the client ------------------------------------------------------------------------------------

    @property
    def client(self):
        with self._client_mutex:  # workers ask at once; boto3's client is thread-safe once made
            return self._client or self._make_client()

    def _make_client(self):
        self._client = aws.client(*self.timeouts, what=f"--cache {self.url}")
        return self._client

    def key(self, file: LockedFile) -> str:
        return self.prefix + blob_key(file.digest)

    def _call(self, what: str, fn, *args, **kwargs):
        """Run one S3 call; turn everything that makes the bucket unusable into CacheUnavailable."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            code = aws.error_code(e)
            if code in _REFUSALS:
                raise CacheUnavailable(f"{self.url}: {what}: {code}", code) from None
            raise
        except BotoCoreError as e:  # unreachable endpoint, no credentials, timeouts
            raise CacheUnavailable(f"{self.url}: {what}: {type(e).__name__}") from None

    # -- blobs -----------------------------------------------------------------------------------------

    def exists(self, file: LockedFile) -> bool:
        from botocore.exceptions import ClientError

        try:
            head = self._call("HEAD", self.client.head_object, Bucket=self.bucket, Key=self.key(file))
        except ClientError as e:
            if aws.error_code(e) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise CacheUnavailable(f"{self.url}: HEAD: {aws.error_code(e)}", aws.error_code(e)) from None
        return head.get("ContentLength") == file.size

    def presigned(self, file: LockedFile) -> str:
        return self._call("sign", self.client.generate_presigned_url, "get_object",
                          Params={"Bucket": self.bucket, "Key": self.key(file)}, ExpiresIn=PRESIGN_SECONDS)

    def upload(self, path: Path, file: LockedFile, sha256: str) -> None:
        """Put ``path`` (verified by the caller) under the blob's key; multipart when large."""
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import ClientError

        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=16 << 20)
        try:
            self._call("upload", self.client.upload_file, str(path), self.bucket, self.key(file), Config=config,
                       ExtraArgs={"Metadata": {"sha256": sha256}})
        except ClientError as e:
            raise CacheUnavailable(f"{self.url}: upload: {aws.error_code(e)}", aws.error_code(e)) from None
        except Exception as e:  # boto3's S3UploadFailedError wraps the ClientError, keeping only its text
            if "AccessDenied" in str(e):
                raise CacheUnavailable(f"{self.url}: upload: AccessDenied", "AccessDenied") from None
            raise

    def listing(self, under: str = "blobs/"):
        """(key relative to the prefix, size, last-modified epoch) of every object under ``under``."""
        pages = self._call("list", self.client.get_paginator("list_objects_v2").paginate, Bucket=self.bucket,
                           Prefix=self.prefix + under)
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.prefix):], obj["Size"], obj["LastModified"].timestamp()
        except Exception as e:  # the paginator calls lazily
            raise CacheUnavailable(f"{self.url}: list: {type(e).__name__}") from None

    def delete_key(self, relative: str) -> None:
        self._call("delete", self.client.delete_object, Bucket=self.bucket, Key=self.prefix + relative)

    # -- single flight: one node fetches a blob from the origin, the others wait for it ----------------

    def lease_key(self, file: LockedFile) -> str:
        return f"{self.prefix}leases/{file.digest}"

    def acquire(self, file: LockedFile, stale: str | None = None) -> Lease | None:
        """Take the lease (``stale``: take over that expired one); None when another node holds it."""
        from botocore.exceptions import ClientError

        holder = f"{socket.gethostname()}:{os.getpid()}"
        key = self.lease_key(file)
        cond = {"IfMatch": stale} if stale else {"IfNoneMatch": "*"}
        try:
            resp = self._call("lease", self.client.put_object, Bucket=self.bucket, Key=key, Body=self._body(holder),
                              **cond)
        except ClientError as e:
            code = aws.error_code(e)
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return None
            if code in ("NotImplemented", "InvalidArgument", "InvalidRequest", "501", "400"):
                raise NoConditionalWrites(code) from None
            raise CacheUnavailable(f"{self.url}: lease: {code}", code) from None
        except CacheUnavailable as e:
            if e.code != "AccessDenied":
                raise
            self.read_only(e)  # a reader's role: it still reads, and waits for nobody
            return None
        return Lease(key=key, etag=resp["ETag"], holder=holder)

    def renew(self, lease: Lease) -> bool:
        """Rewrite the lease (a new ETag shows the holder is alive); False if it was taken over."""
        from botocore.exceptions import ClientError

        try:
            resp = self._call("lease", self.client.put_object, Bucket=self.bucket, Key=lease.key,
                              Body=self._body(lease.holder), IfMatch=lease.etag)
        except (ClientError, CacheUnavailable):
            return False
        lease.etag = resp["ETag"]
        return True

    def release(self, lease: Lease) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call("lease", self.client.delete_object, Bucket=self.bucket, Key=lease.key, IfMatch=lease.etag)
        except (ClientError, CacheUnavailable):
            pass  # taken over, or gone: either way not ours any more

    def lease_etag(self, file: LockedFile) -> str | None:
        """The current lease's ETag, or None when nobody holds one."""
        from botocore.exceptions import ClientError

        try:
            return self._call("lease", self.client.head_object, Bucket=self.bucket, Key=self.lease_key(file))["ETag"]
        except ClientError:
            return None

    def _body(self, holder: str) -> bytes:
        return json.dumps({"holder": holder, "renewed": time.time(), "seconds": self.lease_seconds}).encode()

    def disable(self, error: Exception) -> None:
        """Stop using this cache for the run, with one warning."""
        with self._client_mutex:
            if not self.usable:
                return
            self.usable = False
        log.warning("remote cache unavailable; continuing without it", cache=self.url, error=str(error))

    def read_only(self, error: Exception) -> None:
        """Stop writing to this cache for the run (no permission), with one warning."""
        with self._client_mutex:
            if not self.write:
                return
            self.write = False
        log.warning("cannot write to the remote cache; reading only", cache=self.url, error=str(error))

