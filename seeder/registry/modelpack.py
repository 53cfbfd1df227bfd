"""The formats model files come in, in a registry: CNCF ModelPack (and its older CNAI names), ORAS
artifacts, Docker Model Runner and KitOps layers, as media types and annotations.

github.com/modelpack/model-spec (docs/spec.md, docs/config.md, schema/config-schema.json) is the source.
"""

from __future__ import annotations

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
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"

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
