"""Models in OCI registries: ``oci = "registry.example.com/team/model:v1"`` (a tag, ``@sha256:…``, or both).

Resolving reads the manifest and pins its digest and every file's path, size and sha256. The files are
the manifest's layers: a raw layer is one file, whose sha256 is the layer's digest (ModelPack ``.raw``,
ORAS files, Docker Model Runner's layers), placed at its ``org.cncf.model.filepath`` (or the older
``org.cnai.model.filepath``), else ``org.opencontainers.image.title``. A tar layer (ModelPack ``.tar*``,
KitOps, image layers) is read once when locking to list its members; each member is a file of the lock
with its own sha256 and the layer it comes in (``layer``). Seeding fetches the pinned manifest, never
the tag, so a tag moved since changes nothing until ``seeder refresh``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .. import log
from ..errors import ManifestError, RemoteError
from ..fetch.transport import Client
from ..registry import modelpack
from ..registry.client import Manifest, Registry
from ..settings import Network
from ..spec.kinds.common import selects
from ..spec.kinds.oci import Reference, parse_reference
from ..spec.lock import LockedFile, LockedModel, pins
from ..spec.manifest import Manifest as ModelsToml, ModelSpec
from ..spec.paths import check_relpath

_UNNAMED = {"application/vnd.docker.ai.gguf.v3": "model.gguf", "application/vnd.docker.ai.license": "LICENSE",
            "application/vnd.docker.ai.mmproj": "model.mmproj",
            "application/vnd.docker.ai.safetensors": "model.safetensors"}
"""Docker Model Runner's v0.1 layers carry no path: the names its own pull gives them."""


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    media_type: str
    path: str | None
    """Where a raw layer's file goes in the model's directory; None for an archive."""


@functools.cache
def registry(host: str, net: Network) -> Registry:
    """One per registry and run: its tokens serve every model and thread."""
    return Registry(host, net)


def _registry(model: LockedModel | ModelSpec, net: Network) -> tuple[Registry, Reference]:
    ref = parse_reference(model.repo if isinstance(model, LockedModel) else model.source.reference)
    assert ref is not None  # the manifest and the lock checked it
    return registry(ref.host, net), ref


def network(net: Network, model: LockedModel) -> Network:
    return _registry(model, net)[0].net


def resolve(spec: ModelSpec, manifest: ModelsToml, client: Client) -> LockedModel:
    reg, ref = _registry(spec, client.net)
    found = reg.manifest(ref, spec.name)
    layers = layers_of(found, spec.name, str(ref))
    reader = Client(reg.net, client.parts)  # tar layers are read with the registry's credentials
    files = []
    for layer in layers:
        if layer.path is not None:
            files.append(LockedFile(path=layer.path, size=layer.size, sha256=layer.digest.removeprefix("sha256:")))
        else:
            files += _members(reg, ref, layer, spec.name, reader)
    _check_paths(files, spec.name, str(ref))
    files = sorted((f for f in files if selects(spec.source, f.path)), key=lambda f: f.path)
    if not files:
        raise ManifestError(manifest.path, f"include/exclude match no file in {ref}", spec.name, "include")
    log.info("resolved", model=spec.name, digest=found.digest, files=len(files), bytes=sum(f.size for f in files))
    return LockedModel(name=spec.name, fingerprint=spec.fingerprint, kind="oci", files=tuple(files),
                       repo=spec.source.reference, commit=found.digest)


def layers_of(found: Manifest, model: str, where: str) -> list[Layer]:
    """A manifest's layers, each with where its file goes; a clear error for what is not a model artifact."""
    if found.media_type in modelpack.INDEXES:
        raise RemoteError(f"{model}: {where} is an image index (several platforms or artifacts), not one "
                          "model: name one of its manifests by digest")
    if found.media_type not in modelpack.MANIFESTS:
        raise RemoteError(f"{model}: {where} is a {found.media_type or 'manifest of no media type'}, "
                          "not an OCI image manifest")
    try:
        raw = found.json()["layers"]
        layers = [_layer(entry) for entry in raw]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RemoteError(f"{model}: {where}: the manifest's layers are malformed") from None
    unnamed: dict[str, int] = {}
    for i, layer in enumerate(layers):
        if layer.path is None and modelpack.is_raw(layer.media_type, raw[i].get("annotations")):
            name = _UNNAMED.get(layer.media_type)
            if name is None:
                raise RemoteError(f"{model}: {where}: layer {layer.digest} ({layer.media_type}) names no file path")
            unnamed[name] = unnamed.get(name, 0) + 1
            stem, dot, ext = name.partition(".")
            path = name if unnamed[name] == 1 else f"{stem}-{unnamed[name]}{dot}{ext}"
            layers[i] = Layer(layer.digest, layer.size, layer.media_type, path)
    if not layers:
        raise RemoteError(f"{model}: {where} has no layers")
    return layers


def _layer(entry: dict) -> Layer:
    digest, size, media_type = entry["digest"], entry["size"], entry["mediaType"]
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise ValueError(digest)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(size)
    notes = entry.get("annotations") or {}
    path = None
    if modelpack.is_raw(media_type, notes):
        path = next((notes[k] for k in (*modelpack.FILEPATH, modelpack.TITLE) if isinstance(notes.get(k), str)), None)
    return Layer(digest, size, str(media_type), path)


def _check_paths(files: list[LockedFile], model: str, where: str) -> None:
    """Every path safe, and no two files where one tree has room for one (the same path, or a file where
    another file's directory is: layers are placed independently, so the manifest may hold both)."""
    paths = set()
    for f in files:
        if why := check_relpath(f.path):
            raise RemoteError(f"{model}: {where} names an unsafe file path {f.path!r}: {why}")
        if f.path in paths:
            raise RemoteError(f"{model}: {where} has two files at {f.path!r}")
        paths.add(f.path)
    for path in paths:
        parts = path.split("/")
        if clash := next((d for d in ("/".join(parts[:i]) for i in range(1, len(parts))) if d in paths), None):
            raise RemoteError(f"{model}: {where} has a file at {clash!r} and one inside it, {path!r}")


def _members(reg: Registry, ref: Reference, layer: Layer, model: str, client: Client) -> list[LockedFile]:
    """A tar layer's files: fetched once (verified as it streams) and unpacked to a scratch directory."""
    from ..fetch.download import scratch
    from ..untar import compression, unpack

    if compression(layer.media_type) is None:
        raise RemoteError(f"{model}: {ref}: layer {layer.digest} has an unknown media type {layer.media_type}")
    blob = LockedFile(path=f"layer {layer.digest}", size=layer.size, sha256=layer.digest.removeprefix("sha256:"))
    log.info("reading tar layer", model=model, layer=layer.digest, bytes=layer.size)
    with scratch(client, [reg.blob_url(ref.repository, layer.digest)], blob, model) as (path, _):
        members = unpack(path, layer.media_type, layer.digest, path.with_name("files"))
    return [LockedFile(path=m.path, size=m.size, sha256=m.sha256, pins=pins(layer=layer.digest)) for m in members]


def file_urls(model: LockedModel, file: LockedFile, net: Network) -> list[str]:
    reg, ref = _registry(model, net)
    return [reg.blob_url(ref.repository, file.pin("layer") or f"sha256:{file.sha256}")]


@functools.cache
def _pinned_layers(reference: str, digest: str, name: str, net: Network) -> dict[str, Layer]:
    """The layers of the manifest a lock pins, by digest (fetched by digest: a moved tag changes nothing);
    once per run, however many files its layers hold."""
    ref = parse_reference(reference)
    assert ref is not None  # the lock checked it
    pinned = Reference(ref.host, ref.repository, digest=digest)
    found = registry(ref.host, net).manifest(pinned, name)
    return {layer.digest: layer for layer in layers_of(found, name, str(pinned))}


def archive(model: LockedModel, file: LockedFile, net: Network):
    from . import Archive

    if not file.pin("layer"):
        return None
    layer = _pinned_layers(model.repo, model.commit, model.name, net).get(file.pin("layer"))
    if layer is None:
        raise RemoteError(f"{model.name}: the manifest {model.commit} has no layer {file.pin('layer')}")
    blob = LockedFile(path=f"layer {layer.digest}", size=layer.size, sha256=layer.digest.removeprefix("sha256:"))
    return Archive(blob, file_urls(model, file, net), layer.media_type)
