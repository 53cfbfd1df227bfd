"""How a setting's text becomes its value: (name, raw text) -> value, where anything unusable is a
UsageError naming the variable or flag it came from."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from ..errors import UsageError

DEFAULT_ENDPOINT = "https://huggingface.co"
MIN_PART = 64 << 10  # smaller Range parts only multiply requests
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_REFERENCE = re.compile(r"\$\(\w*\)?")  # $(VAR), or as much of one as there is


def expanded(name: str, raw: str) -> str:
    """``raw``, which must hold no ``$(``: Kubernetes expands ``$(VAR)`` in env values and args only when VAR is
    defined in the container's env, and otherwise leaves the text, which would become a directory, a bucket or a
    token named ``$(VAR)``. Only the reference is quoted: the rest may be a token."""
    if found := _REFERENCE.search(raw):
        raise UsageError(f"{name}: {found.group()} was not expanded (Kubernetes leaves $(VAR) as text when VAR is "
                         "not defined in the container's env)")
    return raw


def boolean(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"{name}={raw!r} is not a boolean (1/true/yes/on or 0/false/no/off)")


def number(lo: float | None = 0, hi: float | None = None, *, integer: bool = False, above: bool = False):
    """A parser for numbers in ``[lo, hi]`` (``(lo, hi]`` with ``above``), whole ones with ``integer``."""
    def parse(name: str, raw: str) -> float | int:
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            raise UsageError(f"{name}={raw!r} is not a {'whole number' if integer else 'number'}") from None
        if above and value <= lo:
            raise UsageError(f"{name}={raw!r} must be more than {lo:g} seconds")
        if lo is not None and value < lo or hi is not None and value > hi:
            bounds = f"between {lo:g} and {hi:g}" if hi is not None else f"at least {lo:g}"
            raise UsageError(f"{name}={raw!r} must be {bounds}")
        return value

    return parse



def size(name: str, raw: str) -> int:
    """A byte count: ``65536``, ``64K``, ``8M``, ``1G`` (powers of 1024)."""
    text = raw.strip().lower().removesuffix("ib").removesuffix("b")
    unit = text[-1:] if text[-1:] in _UNITS else ""
    try:
        value = int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a size (e.g. 65536, 64K, 8M)") from None
    if value < 1:
        raise UsageError(f"{name}={raw!r} must be at least 1 byte")
    return value


def part_size(name: str, raw: str) -> int:
    value = size(name, raw)
    if value < MIN_PART:
        raise UsageError(f"{name}={raw!r} must be at least 64K")
    return value


def choice(*values: str):
    def parse(name: str, raw: str) -> str:
        if raw.strip().lower() not in values:
            raise UsageError(f"{name}={raw!r} is not one of {', '.join(values)}")
        return raw.strip().lower()

    return parse


def text(name: str, raw: str) -> str:
    return raw


def listing(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated values (a flag given several times adds to the list)."""
    return tuple(v.strip() for v in raw.split(",") if v.strip())


def endpoint(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/") or DEFAULT_ENDPOINT
    split = urlsplit(value)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise UsageError(f"{name}={value!r} is not an http(s) URL")
    return value


def existing_path(name: str, raw: str) -> str:
    if not os.path.exists(raw):
        raise UsageError(f"{name}={raw}: no such file or directory")
    return raw
