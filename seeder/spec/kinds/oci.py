"""The ``oci`` kind: a model artifact in an OCI registry (``oci = "host/repo:tag"``, ``@sha256:…`` or both),
locked to its manifest digest (served by sources/oci.py).

The reference grammar is distribution's (github.com/distribution/reference), except that the registry host
is required: a bare ``team/model`` would mean Docker Hub to Docker and something else to every other tool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from .common import globs, string

KIND = "oci"
LABEL = "'oci' (an OCI registry artifact)"
KEYS = {"oci", "include", "exclude"}

COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
"""One path component of a repository name."""
TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_HOST = r"(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|\[[0-9A-Fa-f:]+\]|[A-Za-z0-9-]+(?=:[0-9]))(?::[0-9]{1,5})?"
_REFERENCE = re.compile(rf"(?P<host>{_HOST})/(?P<repository>{COMPONENT.pattern}(?:/{COMPONENT.pattern})*)"
                        rf"(?::(?P<tag>{TAG.pattern}))?(?:@(?P<digest>sha256:[0-9a-f]{{64}}))?", re.ASCII)
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
FILE_PINS = {"layer": DIGEST}
"""Per file of a tar layer: the digest of the layer that holds it."""


@dataclass(frozen=True)
class Reference:
    host: str
    """The registry, with its port when it has one: ``registry.example.com``, ``localhost:5000``."""
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    @property
    def ref(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_reference(value: str) -> Reference | None:
    """``value`` as a reference, or None when it is not one that names its registry."""
    m = _REFERENCE.fullmatch(value)
    if not m or len(m["repository"]) > 255:
        return None
    return Reference(host=m["host"].lower(), repository=m["repository"], tag=m["tag"], digest=m["digest"])


@dataclass(frozen=True)
class OciSource:
    kind: ClassVar[str] = KIND
    reference: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


def parse(entry: dict, fail) -> OciSource:
    value = string(entry, "oci", fail)
    if parse_reference(value) is None:
        raise fail("oci", f"{value!r} is not an OCI reference like 'registry.example.com/team/model:v1' "
                          "(the registry host is required; a tag, an @sha256: digest, or both)")
    return OciSource(reference=value, **globs(entry, fail))


def lock_fields(m: dict, files: tuple, name: str, fail) -> dict:
    """A lock entry's fields of this kind, checked, as :class:`~seeder.spec.lock.LockedModel` takes them:
    the reference as written (``repo``) and the manifest digest it resolved to (``commit``)."""
    reference, digest = m.get("oci"), m.get("digest")
    if not isinstance(reference, str) or parse_reference(reference) is None:
        raise fail(f"model {name!r}: 'oci' must be an OCI reference")
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise fail(f"model {name!r}: 'digest' must be the manifest's sha256:<64 hex> digest")
    if not all(f.sha256 for f in files):
        raise fail(f"model {name!r}: every file of an oci model has a sha256")
    return {"repo": reference, "commit": digest}


def lock_json(model) -> dict:
    return {"oci": model.repo, "digest": model.commit}


def revision(model) -> str:
    """The tag the reference names; ``digest`` when it names only a digest; else ``latest``, as it resolves."""
    ref = parse_reference(model.repo)
    if ref is None or ref.tag:
        return ref.tag if ref else "oci"
    return "digest" if ref.digest else "latest"
