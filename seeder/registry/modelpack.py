"""The formats model files come in, in a registry: CNCF ModelPack (and its older CNAI names), ORAS
artifacts, Docker Model Runner and KitOps layers, as media types and annotations; and the ModelPack v1
artifact ``seeder push`` writes (raw layers, config, manifest).

github.com/modelpack/model-spec (docs/spec.md, docs/config.md, schema/config-schema.json) is the source.
"""

from __future__ import annotations

import hashlib
import json
import re

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((*MANIFESTS, *INDEXES))

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_TYPE = "application/vnd.cncf.model.config.v1+json"

FILEPATH = ("org.cncf.model.filepath", "org.cnai.model.filepath")
"""Where a layer's file goes, in the model's directory: ModelPack's key, and the pre-v0.0.7 one."""
FILE_METADATA = "org.cncf.model.file.metadata+json"
TITLE = "org.opencontainers.image.title"
"""What ORAS clients and CRI-O image volumes name a layer's file by."""

ROLES = ("weight", "weight.config", "doc", "code", "dataset")
_MODEL_LAYER = re.compile(r"application/vnd\.(?:cncf|cnai)\.model\.(?P<role>[a-z.]+)\.v1\.(?P<format>raw|tar"
                          r"(?:\+gzip|\+zstd)?)")


def layer_type(role: str) -> str:
    """The media type of a raw layer of this role."""
    assert role in ROLES
    return f"application/vnd.cncf.model.{role}.v1.raw"


ORAS_UNPACK = "io.deis.oras.content.unpack"
"""ORAS marks a layer that is a directory, packed, with this; every other layer it pushes is one file."""


def is_raw(media_type: str, annotations: dict | None = None) -> bool:
    """Whether a layer is one file's bytes as they are: ModelPack ``.raw``; what ORAS pushed as a file (its
    default media type says tar, but only a layer marked for unpacking is an archive); and any layer that is
    not an archive (Docker Model Runner's gguf/safetensors layers)."""
    if m := _MODEL_LAYER.fullmatch(media_type):
        return m["format"] == "raw"
    notes = annotations or {}
    if isinstance(notes.get(TITLE), str) and not any(k in notes for k in FILEPATH):
        return notes.get(ORAS_UNPACK) != "true"
    return "tar" not in media_type and "+gzip" not in media_type and "+zstd" not in media_type


# -- writing: what seeder push publishes ---------------------------------------------------------------------

UNTESTED = "org.cncf.model.file.mediatype.untested"
FILE_MTIME = "1970-01-01T00:00:00Z"
"""Every file's mtime in its metadata annotation: the same files make the same manifest digest wherever and
whenever they are pushed (an install time would make every target's artifact a different one)."""
FILE_MODE = 0o644
_TYPEFLAG_REGULAR = ord("0")  # tar's regular file, as modctl and the spec's Go type write it

_WEIGHTS = {".safetensors": "safetensors", ".gguf": "gguf", ".onnx": "onnx", ".bin": "pt", ".pt": "pt",
            ".pth": "pt", ".ckpt": "pt", ".h5": "h5", ".msgpack": "msgpack", ".tflite": "tflite", ".pb": "pb",
            ".ot": "ot", ".npz": "npz", ".onnx_data": "onnx", ".ggml": "ggml", ".nemo": "nemo", ".pkl": "pickle",
            ".pickle": "pickle", ".joblib": "joblib", ".mlmodel": "mlmodel", ".engine": "engine"}
_CONFIGS = (".json", ".yaml", ".yml", ".txt", ".model", ".tiktoken", ".toml", ".cfg", ".ini", ".vocab", ".jinja")
_CODE = (".py", ".ipynb", ".sh", ".js", ".ts", ".go", ".rs", ".c", ".cc", ".cpp", ".h", ".hpp", ".cu", ".java")
_DOCS = (".md", ".rst", ".pdf", ".html", ".png", ".jpg", ".jpeg", ".gif", ".svg")
_DOC_NAMES = ("readme", "license", "licence", "notice", "copying", "citation", "use_policy", "model_card")


def role_of(path: str) -> tuple[str, bool]:
    """A file's role by its name, and whether a rule knew the name (False: a guess, said so in the layer)."""
    name = path.rsplit("/", 1)[-1].lower()
    suffix = _suffix(name)
    if name.startswith(_DOC_NAMES) or suffix in _DOCS:
        return "doc", True
    if suffix in _WEIGHTS:
        return "weight", True
    if suffix in _CODE:
        return "code", True
    if suffix in _CONFIGS:
        return "weight.config", True
    return "weight.config", False


def _suffix(name: str) -> str:
    name = name.lower().removesuffix(".data")  # model.onnx.data: an onnx model's external weights
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def layer(path: str, digest: str, size: int) -> dict:
    """The descriptor of one file as a raw layer: its bytes as they are, placed at ``path`` by ModelPack
    readers (filepath) and by ORAS clients and CRI-O image volumes (title)."""
    role, known = role_of(path)
    metadata = {"name": path.rsplit("/", 1)[-1], "mode": FILE_MODE, "uid": 0, "gid": 0, "size": size,
                "mtime": FILE_MTIME, "typeflag": _TYPEFLAG_REGULAR}
    notes = {FILEPATH[0]: path, FILE_METADATA: _json(metadata), TITLE: path}
    if not known:
        notes[UNTESTED] = "true"
    return {"mediaType": layer_type(role), "digest": digest, "size": size, "annotations": notes}


def config(descriptor: dict, paths: list[str], layers: list[dict]) -> bytes:
    """The config blob: valid against model-spec's schema/config-schema.json (which allows no other key),
    ``modelfs.diffIds`` being the layer digests since a raw layer is not compressed; ``config.format`` when
    the weights are all of one format."""
    formats = {_WEIGHTS[s] for s in map(_suffix, paths) if s in _WEIGHTS}
    technical = {"format": formats.pop()} if len(formats) == 1 else {}
    return _json({"descriptor": descriptor, "config": technical,
                  "modelfs": {"type": "layers", "diffIds": [d["digest"] for d in layers]}}).encode()


def manifest(config_blob: bytes, layers: list[dict]) -> bytes:
    return _json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
                  "config": {"mediaType": CONFIG_TYPE, "digest": digest_of(config_blob), "size": len(config_blob)},
                  "layers": layers}).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
