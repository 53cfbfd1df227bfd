"""Parse ``models.toml`` into plain typed data.

Every problem becomes a :class:`ManifestError` naming the file, the model and
the field, so the CLI can exit 2 with one clear line.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import ManifestError
from .paths import check_name, check_relpath

_SHA256 = re.compile(r"[0-9a-f]{64}")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")

_COMMON_KEYS = {"name"}
_REPO_KEYS = {"repo", "revision", "include", "exclude"}
_URL_KEYS = {"url", "sha256", "size", "filename", "mirrors"}
_S3_KEYS = {"s3", "include", "exclude"}
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class RepoSource:
    repo: str
    revision: str = "main"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class UrlSource:
    url: str
    filename: str
    sha256: str | None = None
    size: int | None = None
    mirrors: tuple[str, ...] = ()


@dataclass(frozen=True)
class S3Source:
    """``s3 = "s3://bucket/prefix/"`` (every object under the prefix, filtered by the globs) or
    ``url = "s3://bucket/key"`` (one object, ``single``)."""

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


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: RepoSource | UrlSource | S3Source

    @property
    def kind(self) -> str:
        """The lock entry kind this resolves to, which names its source (see :mod:`seeder.sources`)."""
        return {RepoSource: "repo", UrlSource: "url", S3Source: "s3"}[type(self.source)]

    @property
    def fingerprint(self) -> str:
        """Digest of everything that decides what gets resolved: a lock entry is stale when it differs."""
        blob = json.dumps({"name": self.name, self.kind: asdict(self.source)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


LAYOUTS = ("plain", "hf-cache")
_TOP_KEYS = {"layout", "models"}


@dataclass(frozen=True)
class Manifest:
    path: Path
    models: tuple[ModelSpec, ...] = field(default_factory=tuple)
    layout: str = "plain"
    """How the target arranges files: ``plain`` (``<target>/<name>/``) or ``hf-cache`` (an ``HF_HOME``)."""

    def get(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)


def load(path: Path) -> Manifest:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(path, "no such file (set --manifest or SEEDER_MANIFEST)") from None
    except OSError as e:
        raise ManifestError(path, f"cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ManifestError(path, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(path, f"invalid TOML: {e}") from None
    return parse(data, path)


def parse(data: dict, path: Path) -> Manifest:
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ManifestError(path, f"unknown top-level key {sorted(unknown)[0]!r} (expected layout and [[models]])")
    layout = data.get("layout", "plain")
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ManifestError(path, f"layout = {layout!r}: expected one of {', '.join(map(repr, LAYOUTS))}")
    models = data.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise ManifestError(path, "'models' must be an array of tables ([[models]])")
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(models):
        spec = _parse_model(entry, index, path)
        if spec.name in seen:
            raise ManifestError(path, "duplicate name", spec.name, "name")
        if layout == "hf-cache" and spec.name == "hub":
            raise ManifestError(path, "'hub' is the hf-cache layout's own directory: choose another name",
                                spec.name, "name")
        seen.add(spec.name)
        specs.append(spec)
    return Manifest(path=path, models=tuple(specs), layout=layout)


def _parse_model(entry: dict, index: int, path: Path) -> ModelSpec:
    name = entry.get("name")
    label = name if isinstance(name, str) else f"#{index + 1}"
    if name is None:
        raise ManifestError(path, "missing required field", label, "name")
    if not isinstance(name, str):
        raise ManifestError(path, "must be a string", label, "name")
    if why := check_name(name):
        raise ManifestError(path, why, label, "name")

    def fail(key: str, message: str) -> ManifestError:
        return ManifestError(path, message, name, key)

    kinds = [k for k in ("repo", "url", "s3") if k in entry]
    if len(kinds) != 1:
        raise fail("repo", "set exactly one of 'repo' (a Hugging Face repo), 'url' or 's3' (a bucket prefix)")
    kind = kinds[0]
    allowed = _COMMON_KEYS | {"repo": _REPO_KEYS, "url": _URL_KEYS, "s3": _S3_KEYS}[kind]
    for key in entry:
        if key not in allowed:
            others = [k for k, keys in (("repo", _REPO_KEYS), ("url", _URL_KEYS), ("s3", _S3_KEYS)) if key in keys]
            hint = f" (only valid with '{others[0]}')" if others else ""
            raise fail(key, f"unknown key{hint}")
    if kind == "repo":
        return ModelSpec(name=name, source=_parse_repo(entry, fail))
    if kind == "s3" or str(entry["url"]).startswith("s3://"):
        return ModelSpec(name=name, source=_parse_s3(entry, kind, fail))
    return ModelSpec(name=name, source=_parse_url(entry, fail))


def _string(entry: dict, key: str, fail, default: str | None = None) -> str | None:
    value = entry.get(key, default)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise fail(key, "must be a non-empty string")
    return value


def _string_list(entry: dict, key: str, fail) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(key, "must be an array of strings")
    return tuple(value)


def _check_glob(pattern: str) -> str | None:
    if not pattern:
        return "empty pattern"
    if pattern.count("[") != pattern.count("]"):
        return f"unbalanced brackets in {pattern!r}"
    why = check_relpath(pattern.replace("*", "x").replace("?", "x"))
    return f"{pattern!r} {why}" if why else None


def _globs(entry: dict, fail) -> dict[str, tuple[str, ...]]:
    globs = {}
    for key in ("include", "exclude"):
        globs[key] = _string_list(entry, key, fail)
        for pattern in globs[key]:
            if why := _check_glob(pattern):
                raise fail(key, f"bad glob: {why}")
    return globs


def _parse_s3(entry: dict, field: str, fail) -> S3Source:
    value = _string(entry, field, fail)
    split = urlsplit(value)
    bucket, key = split.netloc, split.path.lstrip("/")
    if split.scheme != "s3" or not _BUCKET.fullmatch(bucket or "") or split.query or split.fragment:
        raise fail(field, f"{value!r} is not s3://bucket/{'key' if field == 'url' else 'prefix/'} "
                          "(bucket: 3-63 lowercase letters, digits, '.', '-')")
    if ".." in key.split("/") or "\0" in key:
        raise fail(field, f"{value!r} has a '..' segment")
    if field == "s3":
        return S3Source(bucket=bucket, key=key if not key or key.endswith("/") else key + "/", **_globs(entry, fail))
    if entry.get("mirrors"):
        raise fail("mirrors", "mirrors are for http(s) URLs; an s3:// object has one home")
    if "size" in entry:
        raise fail("size", "an s3:// object's size is read from the bucket when locking; leave it out")
    if not key or key.endswith("/"):
        raise fail("url", f"{value!r} names no object; for every object under a prefix use s3 = ...")
    filename = _string(entry, "filename", fail) or key.rsplit("/", 1)[-1]
    if (why := check_relpath(filename)) or "/" in filename:
        raise fail("filename", f"{filename!r} {why or 'must be a single file name'}")
    sha256 = _string(entry, "sha256", fail)
    if sha256 is not None and not _SHA256.fullmatch(sha256.lower()):
        raise fail("sha256", "must be 64 hexadecimal characters")
    return S3Source(bucket=bucket, key=key, single=True, filename=filename, sha256=sha256 and sha256.lower())


def _parse_repo(entry: dict, fail) -> RepoSource:
    repo = _string(entry, "repo", fail)
    if not _REPO_ID.fullmatch(repo) or ".." in repo:
        raise fail("repo", f"{repo!r} is not a Hugging Face repo id like 'org/name'")
    revision = _string(entry, "revision", fail, "main")
    if any(c in revision for c in "\0\\") or ".." in revision or revision.startswith("/"):
        raise fail("revision", f"{revision!r} is not a valid branch, tag or commit")
    return RepoSource(repo=repo, revision=revision, **_globs(entry, fail))


def _check_url(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL"
    return None


def _parse_url(entry: dict, fail) -> UrlSource:
    url = _string(entry, "url", fail)
    if why := _check_url(url):
        raise fail("url", why)
    mirrors = _string_list(entry, "mirrors", fail)
    for mirror in mirrors:
        if why := _check_url(mirror):
            raise fail("mirrors", why)
    sha256 = _string(entry, "sha256", fail)
    if sha256 is not None:
        sha256 = sha256.lower()
        if not _SHA256.fullmatch(sha256):
            raise fail("sha256", "must be 64 hexadecimal characters")
    size = entry.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise fail("size", "must be a non-negative integer")
    filename = _string(entry, "filename", fail)
    if filename is None:
        filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        if not filename:
            raise fail("filename", "the URL has no file name; set 'filename'")
    if (why := check_relpath(filename)) or "/" in filename:
        raise fail("filename", f"{filename!r} {why or 'must be a single file name'}")
    return UrlSource(url=url, filename=filename, sha256=sha256, size=size, mirrors=mirrors)
