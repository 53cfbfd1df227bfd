"""Refresh a target in place: re-resolve, fetch only new or changed bytes, switch each model atomically."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import log
from . import lock as lockfile
from .config import Network
from .lock import Lock, LockedFile
from .manifest import Manifest
from .seed import Installer, Summary, save_lock
from .store import Cache, Installed, Target


@dataclass
class ModelChange:
    name: str
    added: list[tuple[str, int]] = field(default_factory=list)
    updated: list[tuple[str, int]] = field(default_factory=list)
    removed: list[tuple[str, int]] = field(default_factory=list)
    commit: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def emit(self, dry_run: bool) -> None:
        log.info("would change" if dry_run else "change", model=self.name, commit=self.commit,
                 added=[p for p, _ in self.added], updated=[p for p, _ in self.updated],
                 removed=[p for p, _ in self.removed], bytes_added=sum(n for _, n in self.added),
                 bytes_updated=sum(n for _, n in self.updated), bytes_removed=sum(n for _, n in self.removed))


def _files(record: Installed | None) -> dict[str, LockedFile]:
    if record is None:
        return {}
    return {f.path: f for f in record.model.files}


def diff(state: dict[str, Installed], new: Lock, keep_removed: bool) -> list[ModelChange]:
    """What installing ``new`` changes, per model, against what the target has."""
    changes = []
    for model in new.models:
        old = _files(state.get(model.name))
        change = ModelChange(model.name, commit=model.commit)
        for f in model.files:
            if f.path not in old:
                change.added.append((f.path, f.size))
            elif old[f.path].digest != f.digest:
                change.updated.append((f.path, f.size))
        wanted = {f.path for f in model.files}
        change.removed = [(p, f.size) for p, f in old.items() if p not in wanted]
        changes.append(change)
    if not keep_removed:
        for name in sorted(set(state) - {m.name for m in new.models}):
            changes.append(ModelChange(name, removed=[(p, f.size) for p, f in _files(state[name]).items()]))
    return changes


def refresh(manifest: Manifest, target: Target, cache: Cache | None, net: Network, *, jobs: int,
            dry_run: bool, keep_removed: bool, grace: float) -> Summary:
    from .resolve import resolve
    from .transfer import Client

    started = time.monotonic()
    fresh = resolve(manifest, [m.name for m in manifest.models], net, Client(net))
    new = Lock(models=tuple(fresh[m.name] for m in manifest.models))
    changes = diff(target.read_state(), new, keep_removed)
    for change in changes:
        if change.changed:
            change.emit(dry_run)
    if dry_run:
        log.info("dry run: nothing was touched", models_to_change=sum(c.changed for c in changes))
        return Summary(models=[m.name for m in new.models])
    save_lock(new, lockfile.lock_path_for(manifest.path), target)
    with target.exclusive():
        target.clear_marker()
        if cache is not None:
            cache.ensure()
        installer = Installer(target, cache, net, jobs, grace=grace)
        summary = installer.run(new)
        if not keep_removed:
            state = installer.state
            for name in sorted(set(state) - {m.name for m in new.models}):
                target.remove_model(name)
                del state[name]
                log.info("removed", model=name)
            target.write_state(state)
    summary.seconds = time.monotonic() - started
    return summary
