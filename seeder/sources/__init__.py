"""Where bytes come from: one module per kind of source, and the registry that picks it.

Each module serves one ``kind`` of lock entry and has two functions: ``resolve(spec, manifest,
client)`` turns its kind of manifest entry into a :class:`~seeder.spec.lock.LockedModel` (files,
sizes, digests), and ``file_urls(model, file, net)`` says where a locked file's bytes can be fetched,
in the order to try. A new kind of source is one module here and one line in :data:`KINDS`, beside
its module and line in :mod:`seeder.spec.kinds` (its manifest keys and lock fields).
May import :mod:`seeder.fetch` (to make requests), :mod:`seeder.spec` and the base modules, never
:mod:`seeder.store` or above.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from types import ModuleType

from .. import log
from ..settings import Network
from ..spec.lock import LockedFile, LockedModel
from ..spec.manifest import Manifest

KINDS = {"repo": "hub", "url": "url", "s3": "s3", "oci": "oci"}
"""A lock entry's kind -> the module in this package that serves it."""


def source(kind: str) -> ModuleType:
    return import_module(f"{__name__}.{KINDS[kind]}")


def file_urls(model: LockedModel, file: LockedFile, net: Network) -> list[str]:
    """Where a locked file's bytes can be fetched, in the order to try."""
    return source(model.kind).file_urls(model, file, net)


@dataclass(frozen=True)
class Archive:
    """Where a file that comes packed (a member of an OCI tar layer) is: the archive as a file to fetch, and
    its media type (which says how to unpack it)."""

    file: LockedFile
    urls: list[str]
    media_type: str


def archive(model: LockedModel, file: LockedFile, net: Network) -> Archive | None:
    """The archive ``file`` comes in, or None for a file fetched as it is (every kind but some oci layers)."""
    find = getattr(source(model.kind), "archive", None)
    return find(model, file, net) if find else None


def network(model: LockedModel, net: Network) -> Network:
    """The settings to fetch a model's files with: a source may adjust them (``s3`` drops the hub token
    and allows the plain-http endpoint the user configured; ``oci`` signs with the registry's credentials)."""
    adjust = getattr(source(model.kind), "network", None)
    return adjust(net, model) if adjust else net


def resolve(manifest: Manifest, names: list[str], client) -> dict[str, LockedModel]:
    """Lock entries for the manifest models named in ``names``, each resolved by its kind of source."""
    resolved = {}
    for spec in manifest.models:
        if spec.name in names:
            log.info("resolving", model=spec.name)
            resolved[spec.name] = source(spec.kind).resolve(spec, manifest, client)
    return resolved
