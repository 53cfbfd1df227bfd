"""The commands: one module per ``seeder`` command, each a ``run(args, cfg, net)`` returning an exit code.

A command is a thin function over the pipeline: it reads the manifest and lock (:mod:`seeder.spec`,
:mod:`seeder.resolve`), applies a lock with :func:`seeder.install.install`, or reads a target
(:mod:`seeder.store`). Commands may import every package below them, never :mod:`seeder.cli` or
each other. Modules are imported when their command runs, so ``seeder verify`` loads no HTTP stack.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ..errors import StorageError, UsageError
from ..resolve import obtain_lock
from ..settings import Settings
from ..spec import manifest as manifests
from ..spec.lock import Lock
from ..spec.manifest import Manifest
from ..store import Cache, Target
from ..store.fs import write_atomic
from ..store.hfcache import HfCache, hub_of
from ..store.seeded import Seeded, is_seeded
from ..store.state import State
from ..store.verify import installed_lock

if TYPE_CHECKING:
    from ..store.s3 import S3Cache

COMMANDS = {"seed": "seed", "verify": "verify", "lock": "lock", "refresh": "refresh", "status": "status",
            "export": "bundle", "import": "bundle", "export-image": "images", "cache": "cache",
            "add": "add", "remove": "remove", "schema": "schema", "push": "push"}
"""Command name -> the module in this package that runs it."""


def command(name: str) -> ModuleType:
    return import_module(f"{__name__}.{COMMANDS[name]}")


def load_manifest(cfg: Settings) -> Manifest:
    return manifests.load(Path(cfg.manifest))


def target_of(cfg: Settings) -> Target:
    return Target(Path(cfg.target))


def checked_lock(cfg: Settings, target: Target, state: State) -> Lock:
    """What a command that reads the target holds it to: the manifest's lock, which must be current (it
    resolves nothing), else, with no manifest to ask, what the target records as installed."""
    if Path(cfg.manifest).exists():
        return obtain_lock(load_manifest(cfg), target, locked=True, net=None)
    lock = installed_lock(state)
    if not lock.models:
        raise UsageError(f"no manifest at {cfg.manifest} and nothing installed in {target.root}")
    return lock


def caches_of(cfg: Settings) -> list[Cache | Seeded | HfCache | S3Cache]:
    """The --cache chain, in lookup order."""
    check_caches(cfg)
    return [_s3_cache(c, cfg) if c.startswith("s3://") else _local_cache(c) for c in cfg.caches]


def local_caches(cfg: Settings) -> list[Cache]:
    """The local --cache directories a run may download into: the writable ones, in order."""
    check_caches(cfg)
    return [c for c in (_local_cache(v) for v in cfg.caches if not v.startswith("s3://")) if c.writable]


def check_caches(cfg: Settings) -> None:
    """Refuse a local --cache and the target inside one another; cheap, so a warm run that needs no
    cache refuses the setting too, rather than waiting for the run that does to fail."""
    # A cache inside the target would show blobs/ tmp/ locks/ to every app listing it; a target inside
    # a cache could be pruned away.
    models = Path(cfg.target).resolve()
    for value in (c for c in cfg.caches if not c.startswith("s3://")):
        cache = Path(value).resolve()
        if cache.is_relative_to(models) or models.is_relative_to(cache):
            raise UsageError(f"--cache {value} and the target {cfg.target} must not contain each other; "
                             "put the cache beside the target")


def _s3_cache(value: str, cfg: Settings) -> S3Cache:
    from ..store.s3 import S3Cache  # only when one is asked for: a plain run never loads it

    return S3Cache(value, write=cfg.cache_write, lease_seconds=cfg.lease_seconds,
                   connect_timeout=cfg.connect_timeout, read_timeout=cfg.read_timeout)


def _local_cache(value: str) -> Cache | Seeded | HfCache:
    if is_seeded(Path(value)):
        return Seeded(Path(value))
    hub = hub_of(Path(value))
    return HfCache(hub) if hub is not None else Cache(Path(value))


def write_edit(manifest: Path, text: str, lock_path: Path, lock: Lock | None, *, adding: bool) -> None:
    """Write an edited manifest and its lock (None: leave the lock as it is), each atomically.

    A lock entry the manifest does not list is harmless (the next ``seeder`` drops it), so that side is
    written first: the lock when adding, the manifest when removing. A run killed between the two
    leaves an edit that running the same command again completes. When the second write fails, the
    first file is put back.
    """
    writes = [(manifest, text)] + ([(lock_path, lock.dumps())] if lock is not None else [])
    if adding:
        writes.reverse()
    (first, first_text), rest = writes[0], writes[1:]
    old = first.read_bytes() if first.exists() else None
    write_atomic(first, first_text)
    try:
        for path, content in rest:
            write_atomic(path, content)
    except StorageError:
        if old is None:
            first.unlink(missing_ok=True)
        else:
            write_atomic(first, old.decode("utf-8"))
        raise
