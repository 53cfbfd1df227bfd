"""The ``s3`` kind: every object under a bucket prefix (``s3 = ...``) or one object (``url = "s3://..."``),
locked with each object's key, ETag and version (served by sources/s3.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

from .common import check_filename, globs, lock_urls, sha256, string

KIND = "s3"
LABEL = "'s3' (a bucket prefix)"
KEYS = {"s3", "include", "exclude"}
FILE_PINS = {"key": None, "etag": None, "version_id": None}
"""Per file: the object's key, its ETag, and its version when the bucket keeps versions."""
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class S3Source:
    """``s3 = "s3://bucket/prefix/"`` (every object under the prefix, filtered by the globs) or
    ``url = "s3://bucket/key"`` (one object, ``single``)."""

    kind: ClassVar[str] = KIND
    bucket: str
    key: str
    """The prefix (ending in "/" or empty) or, with ``single``, the object's key."""
    single: bool = False
    filename: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    sha256: str | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _split(entry: dict, field: str, fail) -> tuple[str, str, str]:
    value = string(entry, field, fail)
    split = urlsplit(value)
    bucket, key = split.netloc, split.path.lstrip("/")
    if split.scheme != "s3" or not _BUCKET.fullmatch(bucket or "") or split.query or split.fragment:
        raise fail(field, f"{value!r} is not s3://bucket/{'key' if field == 'url' else 'prefix/'} "
                          "(bucket: 3-63 lowercase letters, digits, '.', '-')")
    if ".." in key.split("/") or "\0" in key:
        raise fail(field, f"{value!r} has a '..' segment")
    return value, bucket, key


def parse(entry: dict, fail) -> S3Source:
    _, bucket, key = _split(entry, "s3", fail)
    return S3Source(bucket=bucket, key=key if not key or key.endswith("/") else key + "/", **globs(entry, fail))


def parse_object(entry: dict, fail) -> S3Source:
    """``url = "s3://bucket/key"``: one object, with the url kind's keys."""
    value, bucket, key = _split(entry, "url", fail)
    if entry.get("mirrors"):
        raise fail("mirrors", "mirrors are for http(s) URLs; an s3:// object has one home")
    if "size" in entry:
        raise fail("size", "an s3:// object's size is read from the bucket when locking; leave it out")
    if not key or key.endswith("/"):
        raise fail("url", f"{value!r} names no object; for every object under a prefix use s3 = ...")
    filename = check_filename(string(entry, "filename", fail) or key.rsplit("/", 1)[-1], fail)
    return S3Source(bucket=bucket, key=key, single=True, filename=filename, sha256=sha256(entry, fail))


def lock_fields(m: dict, files: tuple, name: str, fail) -> dict:
    """A lock entry's fields of this kind, checked, as :class:`~seeder.spec.lock.LockedModel` takes them."""
    urls = lock_urls(m, name, fail)
    if len(urls) != 1 or not urls[0].startswith("s3://") or not all(f.pin("key") for f in files):
        raise fail(f"model {name!r}: an s3 model has one s3:// url and a key for every file")
    return {"urls": urls}


def lock_json(model) -> dict:
    return {"urls": list(model.urls)}


def revision(model) -> str:
    """One object: the version it was locked at (or, where the bucket keeps none, its ETag), as a commit pins
    a repo; several: the lock pins each."""
    only = model.files[0] if len(model.files) == 1 else None
    if only is not None and only.pin("version_id"):
        return f"version:{only.pin('version_id')}"
    return f"etag:{only.pin('etag')}" if only is not None and only.pin("etag") else "s3"
