"""Validation of relative paths that come from manifests, locks and servers."""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(name: str) -> str | None:
    """Return why ``name`` is not a usable model directory name, or None."""
    if not _NAME.fullmatch(name):
        return ("must start with an ASCII letter or digit and contain only ASCII letters, digits, '.', '_' or '-' "
                "(it names a directory every container and filesystem must agree on)")
    if len(name) > 128:
        return "is longer than 128 characters"
    return None


def check_relpath(path: str) -> str | None:
    """Return why ``path`` could escape or confuse a target directory, or None.

    Paths come from untrusted places (a hub's file list, a URL), so anything
    other than plain forward-slash segments is refused rather than normalised.
    """
    if not path:
        return "is empty"
    if "\0" in path:
        return "contains a NUL byte"
    if "\\" in path:
        return "contains a backslash"
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        return "is absolute"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' segment"
    if parts[0] == ".seeder":
        return "would write into seeder's state directory"
    if len(path) > 1024:
        return "is longer than 1024 characters"
    return None
