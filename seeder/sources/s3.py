"""Models kept in your own bucket: ``s3 = "s3://bucket/prefix/"`` (every object under the prefix,
filtered by include/exclude) or ``url = "s3://bucket/key"`` (one object).

Resolving pins each object: key, size, ETag, VersionId when the bucket keeps versions, and sha256,
taken from the object's full-object SHA-256 checksum, else from the ``x-amz-meta-sha256`` seeder
writes, else computed by reading the object once through the Range engine. Seeding fetches the
pinned version where there is one, through a presigned URL, and verifies it like any file; without a
version, an object that changed under its key is an integrity error naming the key, and ``seeder
refresh`` picks up the new content.
"""

from __future__ import annotations

import base64
from dataclasses import replace

from .. import aws, log
from ..errors import IntegrityError, ManifestError, RemoteError
from ..settings import Network
from ..spec.kinds.common import selects
from ..spec.lock import LockedFile, LockedModel, pins
from ..spec.manifest import Manifest, ModelSpec
from ..spec.paths import check_relpath
from .url import MAX_FILE_SIZE


def network(net: Network, model: LockedModel | None = None) -> Network:
    """Presigned URLs carry their own signature: no hub token, and plain http to an endpoint the user set."""
    return replace(net, token=None, allow_http=True)


def _call(model: str, where: str, fn, **kwargs):
    try:
        return fn(**kwargs)
    except Exception as e:  # noqa: BLE001 - mapped, or re-raised when it is not botocore's
        raise _remote_error(model, where, e, kwargs.get("Bucket")) from None


def _remote_error(model: str, where: str, e: Exception, bucket: str | None = None) -> Exception:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(e, ClientError):
        code = aws.error_code(e)
        if code == "NoSuchBucket" or (code in aws.MISSING and bucket and _missing_bucket(bucket)):
            return RemoteError(f"{model}: {where}: the bucket {bucket} does not exist on {aws.endpoint_name()}")
        if code in aws.MISSING:
            return RemoteError(f"{model}: {where}: no such key")
        return RemoteError(f"{model}: {where}: {aws.describe(e)}")
    if isinstance(e, BotoCoreError):
        return RemoteError(f"{model}: {where}: {aws.describe(e)} (is AWS_ENDPOINT_URL right?)")
    return e


def _missing_bucket(bucket: str) -> bool:
    """Whether a 404 was the bucket's, not the key's (a HEAD's answer has no body to say which)."""
    try:
        return aws.bucket_exists(aws.client(), bucket) is False
    except Exception:  # noqa: BLE001 - only a better message was at stake
        return False


def _objects(spec: ModelSpec, s3) -> list[tuple[str, str]]:
    """(path in the model, key) of every object the spec selects."""
    src = spec.source
    if src.single:
        return [(src.filename, src.key)]
    pages = _call(spec.name, src.url, s3.get_paginator("list_objects_v2").paginate, Bucket=src.bucket,
                  Prefix=src.key)
    keys = []
    try:
        for page in pages:
            keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
    except Exception as e:  # noqa: BLE001 - the paginator calls lazily: map its errors the same way
        raise _remote_error(spec.name, src.url, e, src.bucket) from None
    if not keys:
        raise RemoteError(f"{spec.name}: no object under {src.url}")
    chosen = []
    for key in keys:
        path = key[len(src.key):]
        if not selects(src, path):
            continue
        if why := check_relpath(path):
            raise RemoteError(f"{spec.name}: s3://{src.bucket}/{key} gives an unsafe file path {path!r}: {why}")
        chosen.append((path, key))
    return sorted(chosen)


def resolve(spec: ModelSpec, manifest: Manifest, client) -> LockedModel:
    src, net = spec.source, client.net
    s3 = aws.client(net.connect_timeout, net.read_timeout)
    chosen = _objects(spec, s3)
    if not chosen:
        raise ManifestError(manifest.path, f"include/exclude match no object under {src.url}", spec.name, "include")
    files = tuple(_pin(spec, s3, client, path, key) for path, key in chosen)
    log.info("resolved", model=spec.name, files=len(files), bytes=sum(f.size for f in files))
    return LockedModel(name=spec.name, fingerprint=spec.fingerprint, kind="s3", files=files,
                       urls=(src.url if src.single else f"s3://{src.bucket}/{src.key}",))


def _pin(spec: ModelSpec, s3, client, path: str, key: str) -> LockedFile:
    bucket = spec.source.bucket
    head = _call(spec.name, f"s3://{bucket}/{key}", s3.head_object, Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    size, etag = head.get("ContentLength"), str(head.get("ETag", "")).strip('"')
    if not isinstance(size, int) or not 0 <= size <= MAX_FILE_SIZE:
        raise RemoteError(f"{spec.name}: s3://{bucket}/{key} has an impossible size {size!r}")
    version = head.get("VersionId")
    version = version if version and version != "null" else None
    pinned = LockedFile(path=path, size=size, pins=pins(key=key, etag=etag, version_id=version))
    sha256 = (spec.source.sha256 if spec.source.single else None) or _published_sha256(head)
    if sha256 is None:
        sha256 = _read_sha256(s3, client, spec.name, bucket, pinned)
    return replace(pinned, sha256=sha256)


def _published_sha256(head: dict) -> str | None:
    """The object's own full-object SHA-256 (not a multipart composite), or the one seeder wrote."""
    checksum = head.get("ChecksumSHA256")
    if checksum and "-" not in checksum and head.get("ChecksumType") in (None, "FULL_OBJECT"):
        try:
            return base64.b64decode(checksum).hex()
        except ValueError:
            pass
    meta = (head.get("Metadata") or {}).get("sha256", "").lower()
    return meta if len(meta) == 64 and all(c in "0123456789abcdef" for c in meta) else None


def _read_sha256(s3, client, model: str, bucket: str, file: LockedFile) -> str:
    """Hash the object by reading it once, in parallel ranges, with progress."""
    from ..fetch.download import scratch
    from ..fetch.transport import Client

    log.info("hashing object", model=model, key=file.pin("key"), bytes=file.size)
    with scratch(Client(network(client.net), client.parts), [_presign(s3, bucket, file)], file, model) as (_, got):
        return got.sha256


def _presign(s3, bucket: str, file: LockedFile) -> str:
    params = {"Bucket": bucket, "Key": file.pin("key")}
    if file.pin("version_id"):
        params["VersionId"] = file.pin("version_id")
    return s3.generate_presigned_url("get_object", Params=params, ExpiresIn=3600)


def file_urls(model: LockedModel, file: LockedFile, net: Network) -> list[str]:
    bucket = model.urls[0][len("s3://"):].split("/", 1)[0]
    s3 = aws.client(net.connect_timeout, net.read_timeout)
    if not file.pin("version_id"):
        # Without a version to ask for, a changed object would be caught by its sha256 only after the
        # download: ask its ETag first, and name the key.
        where = f"s3://{bucket}/{file.pin('key')}"
        head = _call(model.name, where, s3.head_object, Bucket=bucket, Key=file.pin("key"))
        if str(head.get("ETag", "")).strip('"') != file.pin("etag"):
            raise IntegrityError(f"{model.name}: {where} changed since it was locked; run `seeder refresh`")
    return [_presign(s3, bucket, file)]
