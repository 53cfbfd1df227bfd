"""``seeder refresh``: re-resolve every model, fetch only new or changed bytes, switch each model
atomically, and remove models the manifest no longer lists (unless ``--keep-removed``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from .. import log
from ..errors import OK, UsageError
from ..fmt import count, human_bytes
from ..install import install
from ..resolve import resolve, save_lock
from ..spec import lock as lockfile
from ..spec.lock import Lock, LockedFile
from ..store.state import ModelRecord, State
from . import caches_of, check_caches, load_manifest, target_of

CHANGES = 10
"""``refresh --dry-run --exit-code``: something would change (0: nothing would)."""


@dataclass
class ModelChange:
    name: str
    added: list[tuple[str, int]] = field(default_factory=list)
    updated: list[tuple[str, int]] = field(default_factory=list)
    removed: list[tuple[str, int]] = field(default_factory=list)
    commit: str | None = None
    old_commit: str | None = None
    installed: bool = True
    """Whether the target has the model now."""
    listed: bool = True
    """Whether the new lock has it."""

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    @property
    def action(self) -> str:
        if not self.listed:
            return "remove"
        if not self.installed:
            return "add"
        return "update" if self.changed else "unchanged"

    def plan(self) -> dict:
        moved = self.removed if self.action == "remove" else self.added + self.updated
        return {"model": self.name, "action": self.action, "files": len(moved), "bytes": sum(n for _, n in moved),
                "from": self.old_commit, "to": self.commit if self.listed else None}

    def emit(self, dry_run: bool) -> None:
        log.info("would change" if dry_run else "change", model=self.name, commit=self.commit,
                 added=[p for p, _ in self.added], updated=[p for p, _ in self.updated],
                 removed=[p for p, _ in self.removed], bytes_added=sum(n for _, n in self.added),
                 bytes_updated=sum(n for _, n in self.updated), bytes_removed=sum(n for _, n in self.removed))


def _files(record: ModelRecord | None) -> dict[str, LockedFile]:
    if record is None:
        return {}
    return {f.path: f for f in record.model.files}


def diff(state: State, new: Lock, keep_removed: bool) -> list[ModelChange]:
    """What installing ``new`` changes, per model, against what the target has."""
    changes = []
    for model in new.models:
        record = state.get(model.name)
        old = _files(record)
        change = ModelChange(model.name, commit=model.commit, installed=record is not None,
                             old_commit=record.model.commit if record else None)
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
            changes.append(ModelChange(name, removed=[(p, f.size) for p, f in _files(state[name]).items()],
                                       listed=False, old_commit=state[name].model.commit))
    return changes


def _render(plan: list[dict]) -> str:
    lines = []
    for p in plan:
        revs = f"{(p['from'] or '-')[:12]} -> {(p['to'] or '-')[:12]}"
        size = f"{count(p['files'], 'file')}, {human_bytes(p['bytes'])}" if p["files"] else ""
        lines.append(f"{p['action']:<9} {p['model']:<24} {size:<24} {revs}".rstrip())
    return "\n".join(lines)


def run(args, cfg, net) -> int:
    if net.offline:
        raise UsageError("seeder refresh needs the hub; it cannot run --offline")
    started = time.monotonic()
    check_caches(cfg)  # before resolving: a refused setting costs no request and writes no lock
    manifest, target = load_manifest(cfg), target_of(cfg)
    fresh = resolve(manifest, [m.name for m in manifest.models], net)
    new = Lock(models=tuple(fresh[m.name] for m in manifest.models))
    changes = diff(target.read_state(), new, args.keep_removed)
    for change in changes:
        if change.changed:
            change.emit(args.dry_run)
    if args.dry_run:
        plan = [c.plan() for c in changes]
        print(json.dumps(plan, indent=2) if args.json else _render(plan))
        would = sum(p["action"] != "unchanged" for p in plan)
        log.info("dry run: nothing was touched", models_to_change=would)
        return CHANGES if would and args.exit_code else OK
    save_lock(new, lockfile.lock_path_for(manifest.path), target, by="refresh")
    summary = install(new, target, caches=caches_of(cfg), net=net, parts=cfg.parts(), jobs=cfg.jobs, grace=cfg.grace,
                      remove_unlisted=not args.keep_removed, layout=manifest.layout)
    summary.seconds = time.monotonic() - started
    summary.emit()
    return OK
