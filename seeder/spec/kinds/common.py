"""What several kinds' manifest and lock checks share: typed fields, glob lists, digests and URL lists."""

from __future__ import annotations

import re
from fnmatch import fnmatch

from ..paths import check_relpath

SHA256 = re.compile(r"[0-9a-f]{64}")


def string(entry: dict, key: str, fail, default: str | None = None) -> str | None:
    value = entry.get(key, default)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise fail(key, "must be a non-empty string")
    return value


def string_list(entry: dict, key: str, fail) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(key, "must be an array of strings")
    return tuple(value)


def sha256(entry: dict, fail) -> str | None:
    """The optional ``sha256`` key, lowercased."""
    value = string(entry, "sha256", fail)
    if value is not None and not SHA256.fullmatch(value.lower()):
        raise fail("sha256", "must be 64 hexadecimal characters")
    return value and value.lower()


def check_filename(filename: str, fail) -> str:
    if (why := check_relpath(filename)) or "/" in filename:
        raise fail("filename", f"{filename!r} {why or 'must be a single file name'}")
    return filename


def _check_glob(pattern: str) -> str | None:
    if not pattern:
        return "empty pattern"
    if pattern.count("[") != pattern.count("]"):
        return f"unbalanced brackets in {pattern!r}"
    why = check_relpath(pattern.replace("*", "x").replace("?", "x"))
    return f"{pattern!r} {why}" if why else None


def globs(entry: dict, fail) -> dict[str, tuple[str, ...]]:
    """``include`` and ``exclude``, each a list of checked globs."""
    found = {}
    for key in ("include", "exclude"):
        found[key] = string_list(entry, key, fail)
        for pattern in found[key]:
            if why := _check_glob(pattern):
                raise fail(key, f"bad glob: {why}")
    return found


def lock_urls(m: dict, name: str, fail) -> tuple[str, ...]:
    """A lock entry's ``urls``: a non-empty list of strings."""
    urls = m.get("urls")
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise fail(f"model {name!r}: 'urls' must be a non-empty list of strings")
    return tuple(urls)


def selects(source, path: str) -> bool:
    """Whether a source's include/exclude globs keep ``path`` (no include: everything)."""
    if source.include and not any(fnmatch(path, p) for p in source.include):
        return False
    return not any(fnmatch(path, p) for p in source.exclude)
