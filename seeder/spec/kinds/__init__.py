"""The kinds of source, as the manifest and the lock see them: one module per kind, and the registry.

Each module names its ``KIND`` (the manifest key that selects it, and the lock entry's ``kind``),
``LABEL`` (how the manifest's errors name it), ``KEYS`` (the manifest keys it takes besides
``name``) and ``FILE_PINS`` (what its lock entries pin per file besides the digests, name -> pattern),
and has a frozen source dataclass with ``kind`` as a class variable, ``parse(entry, fail)``
(a manifest table -> that dataclass), ``lock_fields(m, files, name, fail)`` (a lock entry's fields of
this kind, checked, as :class:`~seeder.spec.lock.LockedModel` takes them), ``lock_json(model)``
(those fields back to JSON) and ``revision(model)`` (what ``status`` shows it was asked at). A new kind
is one module here and one line in :data:`KINDS`, beside its module under :mod:`seeder.sources` (which
fetches; this package only parses).
"""

from __future__ import annotations

from types import ModuleType

from . import oci, repo, s3, url
from .oci import OciSource
from .repo import RepoSource
from .s3 import S3Source
from .url import UrlSource

KINDS: dict[str, ModuleType] = {m.KIND: m for m in (repo, url, s3, oci)}
"""A kind -> its module, in the order the manifest's errors name them."""

Source = RepoSource | UrlSource | S3Source | OciSource
