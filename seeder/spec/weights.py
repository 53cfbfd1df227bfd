"""Which files of a model repo serving needs: the weights in one format, plus config and tokenizer.

Repos often carry the same weights several times (safetensors, PyTorch .bin, ONNX, TensorFlow, Flax,
Rust, OpenVINO): taking them all multiplies the download for nothing. ``seeder add`` picks one format
from the repo's file list and excludes the others, so config and tokenizer files, whatever they are
named, still come along.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

FORMATS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("safetensors", ("*.safetensors",)),
    ("pytorch", ("*.bin", "*.pt", "*.pth")),
    ("onnx", ("*.onnx", "*.onnx_data", "onnx/**")),
    ("openvino", ("openvino/**",)),
    ("tensorflow", ("*.h5", "*.tflite", "*.pb")),
    ("flax", ("*.msgpack",)),
    ("rust", ("*.ot",)),
    ("coreml", ("*.mlmodel", "*.mlpackage/**", "coreml/**")),
    ("gguf", ("*.gguf",)),
)
"""Weight formats, preferred first: safetensors loads without running code and maps into memory."""

NOT_SERVED = (".gitattributes", "*.md")
"""Repo files no server reads."""


@dataclass(frozen=True)
class Selection:
    format: str | None
    """The weight format kept; None when the repo has none of :data:`FORMATS`."""
    exclude: tuple[str, ...]
    weights: tuple[str, ...]
    """The repo's files in the kept format."""


def matches(path: str, pattern: str) -> bool:
    """As the hub client filters (``fnmatch``, ``*`` crosses ``/``), so what is shown is what is locked."""
    return fnmatchcase(path, pattern)


def _any(paths: list[str], patterns: tuple[str, ...]) -> list[str]:
    return [p for p in paths if any(matches(p, g) for g in patterns)]


def select(paths: list[str]) -> Selection:
    """Keep the most preferred format present; exclude every other format's patterns, except those
    that would also drop a file of the kept format (OpenVINO weights end in .bin, for one)."""
    chosen = next(((name, globs) for name, globs in FORMATS if _any(paths, globs)), None)
    if chosen is None:
        return Selection(None, NOT_SERVED, ())
    name, globs = chosen
    kept = _any(paths, globs)
    exclude = [g for other, patterns in FORMATS if other != name for g in patterns
               if not any(matches(p, g) for p in kept)]
    return Selection(name, tuple(exclude) + NOT_SERVED, tuple(kept))
