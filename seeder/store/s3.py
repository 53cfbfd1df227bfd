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
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import aws, log
from ..errors import TransientError
from ..spec.lock import LockedFile
from .circuit import Circuit

PRESIGN_SECONDS = 3600
MULTIPART_THRESHOLD = 64 << 20


class CacheUnavailable(Exception):
    """The bucket refused for good (credentials, permissions, missing): carry on without it."""

    def __init__(self, message: str, code: str = "", writing: bool = False):
        super().__init__(message)
        self.code = code
        self.writing = writing  # refused a lease or an upload: a reader's role, not a dead bucket


class CacheBusy(CacheUnavailable, TransientError):
    """Unreachable, a 5xx, SlowDown: worth asking again later (the retry policy, or the circuit)."""


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
    took_over: bool = False  # taken from a holder that stopped renewing, not from nobody


class S3Cache:
    def __init__(self, url: str, *, write: bool = True, lease_seconds: float = 60.0,
                 connect_timeout: float = 10.0, read_timeout: float = 30.0):
        self.url = url
        self.bucket, self.prefix = parse_url(url)
        self.write = write
        self.lease_seconds = lease_seconds
        self.timeouts = (connect_timeout, read_timeout)
        # An outage shorter than half a lease is waited out: a store restart takes seconds, and by then
        # a waiting node has not yet taken over the lease of a holder that could not renew.
        self.circuit = Circuit(url, give_up=lease_seconds / 2)
        self._bucket_known = False
        self._mutex = threading.Lock()

    # -- the client ------------------------------------------------------------------------------------

    @property
    def client(self):
        # Retries are the circuit's and the retry policy's: boto3's own would multiply them.
        return aws.client(*self.timeouts, what=f"--cache {self.url}", attempts=1)

    @property
    def usable(self) -> bool:
        return not self.circuit.off

    def key(self, file: LockedFile) -> str:
        return self.prefix + blob_key(file.digest)

    def _call(self, what: str, fn, *args, **kwargs):
        """Run one S3 call: a refusal is CacheUnavailable, a store in trouble CacheBusy; any other answer
        of the store's (404, 412, ...) is the caller's to read."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self.circuit.off:  # given up on: nothing more is asked of it, a lease's renewal included
            raise CacheUnavailable(f"{self.url}: given up on for this run")
        if not self._bucket_known:
            self._check_bucket()
        try:
            result = fn(*args, **kwargs)
        except ClientError as e:
            if aws.refused(e):
                raise CacheUnavailable(f"{self.url}: {what}: {aws.describe(e)}", aws.error_code(e),
                                       writing=what in ("lease", "upload")) from None
            if aws.busy(e):
                raise CacheBusy(f"{self.url}: {what}: {aws.describe(e)}", aws.error_code(e)) from None
            self.circuit.succeeded()  # it answered
            raise
        except BotoCoreError as e:  # unreachable endpoint, no credentials, timeouts
            cls = CacheUnavailable if aws.refused(e) else CacheBusy
            raise cls(f"{self.url}: {what}: {aws.describe(e)}") from None
        self.circuit.succeeded()
        return result

    def _check_bucket(self) -> None:
        """Once: a missing bucket is named as such (some stores answer its writes with AccessDenied)."""
        from botocore.exceptions import BotoCoreError

        try:
            exists = aws.bucket_exists(self.client, self.bucket)
        except BotoCoreError as e:
            raise CacheBusy(f"{self.url}: {aws.describe(e)}") from None
        if exists is False:
            where = aws.endpoint_name()
            raise CacheUnavailable(f"{self.url}: the bucket {self.bucket} does not exist on {where}", "NoSuchBucket")
        self._bucket_known = True

    def trouble(self, error: CacheUnavailable) -> None:
        """What a failed call means for the rest of the run: wait and ask again, or stop asking."""
        if isinstance(error, CacheBusy):
            self.circuit.failed(str(error))
        elif error.writing and error.code == "AccessDenied":
            self.read_only(error)  # it still reads
        else:
            self.circuit.refused(str(error))

    # -- blobs -----------------------------------------------------------------------------------------

    def head(self, file: LockedFile) -> str | None:
        """The blob's ETag when the bucket holds one of the right size, else None."""
        from botocore.exceptions import ClientError

        try:
            head = self._call("HEAD", self.client.head_object, Bucket=self.bucket, Key=self.key(file))
        except ClientError as e:
            if aws.error_code(e) in aws.MISSING:
                return None
            raise CacheUnavailable(f"{self.url}: HEAD: {aws.describe(e)}", aws.error_code(e)) from None
        return str(head.get("ETag", "")) if head.get("ContentLength") == file.size else None

    def exists(self, file: LockedFile) -> bool:
        return self.head(file) is not None

    def presigned(self, file: LockedFile) -> str:
        return self._call("sign", self.client.generate_presigned_url, "get_object",
                          Params={"Bucket": self.bucket, "Key": self.key(file)}, ExpiresIn=PRESIGN_SECONDS)

    def upload(self, path: Path, file: LockedFile, sha256: str) -> None:
        """Put ``path`` (verified by the caller) under the blob's key; multipart when large. One attempt:
        the caller retries a CacheBusy under the retry policy."""
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import ClientError

        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=16 << 20)
        try:
            self._call("upload", self.client.upload_file, str(path), self.bucket, self.key(file), Config=config,
                       ExtraArgs={"Metadata": {"sha256": sha256}})
        except (ClientError, S3UploadFailedError) as e:  # boto3 wraps the ClientError, keeping only its text
            cls = CacheUnavailable if aws.refused(e) else CacheBusy
            raise cls(f"{self.url}: upload: {aws.describe(e)}", aws.error_code(e), writing=True) from None

    def listing(self, under: str = "blobs/"):
        """(key relative to the prefix, size, last-modified epoch) of every object under ``under``."""
        pages = self._call("list", self.client.get_paginator("list_objects_v2").paginate, Bucket=self.bucket,
                           Prefix=self.prefix + under)
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.prefix):], obj["Size"], obj["LastModified"].timestamp()
        except Exception as e:  # noqa: BLE001 - the paginator calls lazily, outside _call
            cls = CacheUnavailable if aws.refused(e) else CacheBusy
            raise cls(f"{self.url}: list: {aws.describe(e)}", aws.error_code(e)) from None

    def delete_key(self, relative: str) -> None:
        self._call("delete", self.client.delete_object, Bucket=self.bucket, Key=self.prefix + relative)

    # -- single flight: one node fetches a blob from the origin, the others wait for it ----------------

    def lease_key(self, file: LockedFile) -> str:
        return f"{self.prefix}leases/{file.digest}"

    def acquire(self, file: LockedFile, stale: str | None = None) -> Lease | None:
        """Take the lease (``stale``: take over that expired one); None when another node holds it."""
        holder = f"{socket.gethostname()}:{os.getpid()}"
        key = self.lease_key(file)
        cond = {"IfMatch": stale} if stale else {"IfNoneMatch": "*"}
        etag = self._put_if(key, self._body(holder), **cond)
        return None if etag is None else Lease(key=key, etag=etag, holder=holder, took_over=stale is not None)

    def _put_if(self, key: str, body: bytes, **cond: str) -> str | None:
        """A conditional PUT: the new ETag, or None when the condition failed."""
        from botocore.exceptions import ClientError

        try:
            return self._call("lease", self.client.put_object, Bucket=self.bucket, Key=key, Body=body, **cond)["ETag"]
        except ClientError as e:
            code = aws.error_code(e)
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return None
            if code in ("NotImplemented", "InvalidArgument", "InvalidRequest", "501", "400"):
                raise NoConditionalWrites(code) from None
            raise CacheUnavailable(f"{self.url}: lease: {aws.describe(e)}", code, writing=True) from None

    def check_conditional_writes(self) -> None:
        """Raise NoConditionalWrites unless the store refuses what it must refuse. A store (or a proxy in
        front of it) that drops ``If-None-Match``/``If-Match`` answers every conditional PUT with 200: every
        node would hold every lease, and nothing else tells it apart from one that honours them."""
        key = f"{self.prefix}leases/probe-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        if self._put_if(key, b"", IfNoneMatch="*") is None:
            raise NoConditionalWrites("If-None-Match: * refused on a key that does not exist")
        try:
            if self._put_if(key, b"", IfNoneMatch="*") is not None:
                raise NoConditionalWrites("If-None-Match: * ignored: a second PUT of the same key succeeded")
            if self._put_if(key, b"", IfMatch='"0"') is not None:
                raise NoConditionalWrites("If-Match ignored: a PUT naming another ETag succeeded")
        finally:
            from botocore.exceptions import ClientError

            try:
                self._call("lease", self.client.delete_object, Bucket=self.bucket, Key=key)
            except (ClientError, CacheUnavailable):
                pass  # a probe left behind is a few bytes under leases/, which the lifecycle rule expires

    def renew(self, lease: Lease) -> bool:
        """Rewrite the lease (a new ETag shows the holder is alive); False if it was taken over. A store
        in trouble raises CacheBusy: the lease may still be ours at the next try."""
        from botocore.exceptions import ClientError

        try:
            resp = self._call("lease", self.client.put_object, Bucket=self.bucket, Key=lease.key,
                              Body=self._body(lease.holder), IfMatch=lease.etag)
        except ClientError:
            return False
        except CacheBusy:
            raise
        except CacheUnavailable:
            return False
        lease.etag = resp["ETag"]
        return True

    def release(self, lease: Lease) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call("lease", self.client.delete_object, Bucket=self.bucket, Key=lease.key, IfMatch=lease.etag)
        except (ClientError, CacheUnavailable):
            pass  # taken over or gone (not ours any more), or the store is down: it expires

    def lease_etag(self, file: LockedFile) -> str | None:
        """The current lease's ETag, or None when nobody holds one."""
        from botocore.exceptions import ClientError

        try:
            return self._call("lease", self.client.head_object, Bucket=self.bucket, Key=self.lease_key(file))["ETag"]
        except ClientError:
            return None

    def _body(self, holder: str) -> bytes:
        return json.dumps({"holder": holder, "renewed": time.time(), "seconds": self.lease_seconds}).encode()

    def read_only(self, error: Exception, why: str = "cannot write to the remote cache; reading only") -> None:
        """Stop writing to this cache for the run (no permission, or every upload fails), with one warning."""
        with self._mutex:
            if not self.write:
                return
            self.write = False
        log.warning(why, cache=self.url, error=str(error))

