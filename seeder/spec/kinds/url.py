"""The ``url`` kind: one file at an http(s) URL, with mirrors (served by sources/url.py).

An ``s3://`` URL is one object of the ``s3`` kind: :func:`parse` hands it over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import unquote, urlsplit

from . import s3
from .common import check_filename, lock_urls, sha256, string, string_list

KIND = "url"
LABEL = "'url'"
KEYS = {"url", "sha256", "size", "filename", "mirrors"}
FILE_PINS: dict = {}


@dataclass(frozen=True)
class UrlSource:
    kind: ClassVar[str] = KIND
    url: str
    filename: str
    sha256: str | None = None
    size: int | None = None
    mirrors: tuple[str, ...] = ()


def _check_url(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL"
    return None


def parse(entry: dict, fail) -> UrlSource | s3.S3Source:
    if str(entry["url"]).startswith("s3://"):
        return s3.parse_object(entry, fail)
    url = string(entry, "url", fail)
    if why := _check_url(url):
        raise fail("url", why)
    mirrors = string_list(entry, "mirrors", fail)
    for mirror in mirrors:
        if why := _check_url(mirror):
            raise fail("mirrors", why)
    digest = sha256(entry, fail)
    size = entry.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise fail("size", "must be a non-negative integer")
    filename = string(entry, "filename", fail)
    if filename is None:
        filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        if not filename:
            raise fail("filename", "the URL has no file name; set 'filename'")
    return UrlSource(url=url, filename=check_filename(filename, fail), sha256=digest, size=size, mirrors=mirrors)


def lock_fields(m: dict, files: tuple, name: str, fail) -> dict:
    """A lock entry's fields of this kind, checked, as :class:`~seeder.spec.lock.LockedModel` takes them."""
    urls = lock_urls(m, name, fail)
    if len(files) != 1:
        raise fail(f"model {name!r}: a url model has exactly one file")
    return {"urls": urls}


def lock_json(model) -> dict:
    return {"urls": list(model.urls)}


def revision(model) -> str:
    return "url"
