"""Open model files the way a loader would: enough parsing to reject a broken or truncated file.

Only headers are read, never tensor data, so start-up stays fast even for multi-GB files.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import BinaryIO


class BadModelFile(Exception):
    """The file is not what its extension says, or it is cut short."""


def describe(path: Path) -> dict | None:
    """Header facts for the formats this app loads; None for files it does not interpret."""
    readers = {".gguf": read_gguf, ".safetensors": read_safetensors, ".json": read_json}
    reader = readers.get(path.suffix)
    return reader(path) if reader else None


# -- safetensors: u64 little-endian header length, JSON header, then the tensor bytes ----------------

MAX_SAFETENSORS_HEADER = 100 << 20  # the format's own limit


def read_safetensors(path: Path) -> dict:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise BadModelFile(f"{path}: too short for a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_SAFETENSORS_HEADER or 8 + length > size:
            raise BadModelFile(f"{path}: header length {length} does not fit a {size}-byte file")
        try:
            header = json.loads(fh.read(length))
        except ValueError as e:
            raise BadModelFile(f"{path}: header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise BadModelFile(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_size = size - 8 - length
    params, dtypes = 0, set()
    for name, info in header.items():
        try:
            start, end = info["data_offsets"]
            shape, dtype = info["shape"], info["dtype"]
        except (TypeError, KeyError, ValueError):
            raise BadModelFile(f"{path}: tensor {name!r} has a malformed entry") from None
        if not 0 <= start <= end <= data_size:
            raise BadModelFile(f"{path}: tensor {name!r} lies outside the file (truncated?)")
        count = 1
        for dim in shape:
            count *= dim
        params += count
        dtypes.add(dtype)
    return {"format": "safetensors", "tensors": len(header), "parameters": params, "dtypes": sorted(dtypes),
            "metadata": metadata}


# -- GGUF v2/v3: magic, version, tensor count, metadata key/values, tensor infos ----------------------

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_STRING = 64 << 20


class _Reader:
    def __init__(self, fh: BinaryIO, path: Path):
        self.fh, self.path = fh, path

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise BadModelFile(f"{self.path}: unexpected end of file in the GGUF header (truncated?)")
        return data

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > MAX_STRING:
            raise BadModelFile(f"{self.path}: implausible string length {n}")
        return self.take(n).decode("utf-8", "replace")

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.unpack("<I"), self.unpack("<Q")
            if item == _ARRAY:
                raise BadModelFile(f"{self.path}: nested arrays are not supported")
            for _ in range(count):  # skipped, not kept: tokenizer vocabularies are large
                self.value(item)
            return f"[{count} items]"
        raise BadModelFile(f"{self.path}: unknown metadata value type {kind}")


def read_gguf(path: Path) -> dict:
    with open(path, "rb") as fh:
        r = _Reader(fh, path)
        if r.take(4) != b"GGUF":
            raise BadModelFile(f"{path}: not a GGUF file (bad magic)")
        version = r.unpack("<I")
        if version not in (2, 3):
            raise BadModelFile(f"{path}: unsupported GGUF version {version}")
        tensors, kv_count = r.unpack("<Q"), r.unpack("<Q")
        metadata = {}
        for _ in range(kv_count):
            key = r.string()
            value = r.value(r.unpack("<I"))
            if key.startswith("general."):
                metadata[key] = value
        for _ in range(tensors):  # name, dims, type, offset: proves the header is complete
            r.string()
            dims = r.unpack("<I")
            r.take(8 * dims + 4 + 8)
    return {"format": "gguf", "version": version, "tensors": tensors, "metadata_kv": kv_count,
            "architecture": metadata.get("general.architecture"), "name": metadata.get("general.name")}


def read_json(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
    except ValueError as e:
        raise BadModelFile(f"{path}: not valid JSON: {e}") from None
    return {"format": "json", "keys": len(data) if isinstance(data, (dict, list)) else 0}
