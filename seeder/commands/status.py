"""``seeder status``: what a target holds, per model, and in what state."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import log
from ..errors import OK, IntegrityError, UsageError
from ..fetch.partial import partial_path, size_on_disk
from ..fmt import human_bytes
from ..resolve import Choice, choose_lock
from ..spec import manifest as manifests
from ..spec.kinds import KINDS
from ..spec.lock import Lock, LockedModel
from ..spec.manifest import Manifest
from ..store import Cache, Target
from ..store import state as states
from ..store.verify import verify
from . import local_caches, target_of

COMPLETE, PARTIAL, MISSING, STALE, MODIFIED, EXTRA = "complete", "partial", "missing", "stale", "modified", "extra"


@dataclass
class ModelStatus:
    name: str
    state: str
    revision: str | None = None
    commit: str | None = None
    files: int = 0
    bytes: int = 0
    installed_at: str | None = None
    detail: str | None = None
    ahead_of: str | None = None
    """What the given lock pins (commit, else version) where the target runs on a newer lock of its own."""


def status(target: Target, manifest: Manifest | None, lock: Lock | None, *, deep: bool,
           caches: Sequence[Cache] = ()) -> list[ModelStatus]:
    """``deep`` hashes every file, so a change that keeps a file's size shows up as "modified" too.
    ``caches``: the local --cache directories; a run's partials live in the first one's ``tmp/``."""
    state = target.read_state()
    names = [m.name for m in manifest.models] if manifest else []
    names += sorted(n for n in state if n not in names)
    rows = []
    for name in names:
        record = state.get(name)
        spec = manifest.get(name) if manifest else None
        if record is None or not target.path_of(record.model).exists():
            rows.append(_not_installed(target, name, lock, caches[0].tmp if caches else target.tmp))
            continue
        installed = record.model
        row = ModelStatus(name, COMPLETE, revision=revision_of(installed),
                          commit=installed.commit, files=len(installed.files),
                          bytes=installed.total_size, installed_at=record.installed_at)
        problems = verify(target, Lock(models=(installed,)), fast=not deep, state=state)
        if problems:  # a file changed, went, or came since install: damage, never a download still under way
            row.state, row.detail = MODIFIED, "; ".join(str(p) for p in problems[:3])
        elif manifest is not None and spec is None:
            row.state, row.detail = EXTRA, "not in the manifest (seeder refresh removes it)"
        elif spec is not None and spec.fingerprint != installed.fingerprint:
            row.state, row.detail = STALE, "the manifest changed since install"
        elif lock is not None and (locked := lock.get(name)) and locked.version != installed.version:
            row.state, row.detail = STALE, "the lock pins another version"
        rows.append(row)
    return rows


def revision_of(model: LockedModel) -> str:
    """What the model was asked at, as its kind says (a repo's branch, an object's version, a tag)."""
    return KINDS[model.kind].revision(model)


def _not_installed(target: Target, name: str, lock: Lock | None, tmp: Path) -> ModelStatus:
    """Missing, or partial with the bytes a running or interrupted download has in ``tmp`` (the target's,
    or the cache's a run with --cache downloads into: where the next run resumes it)."""
    model = lock.get(name) if lock else None
    if model is None:
        return ModelStatus(name, MISSING)
    have = sum(size_on_disk(partial_path(tmp, f)) + (f.size if target.file_path(model, f).exists() else 0)
               for f in model.files)
    if not have:
        return ModelStatus(name, MISSING)
    return ModelStatus(name, PARTIAL, revision=revision_of(model), commit=model.commit, files=len(model.files),
                       bytes=model.total_size, detail=f"{human_bytes(have)} of {human_bytes(model.total_size)} "
                       "on disk, not installed yet (seeder resumes it)")


def render_table(rows: list[ModelStatus]) -> str:
    header = ("MODEL", "STATE", "REVISION", "COMMIT", "FILES", "SIZE", "INSTALLED")
    lines = [header]
    for r in rows:
        commit = (r.commit or "-").removeprefix("sha256:")[:12]  # an oci model's manifest digest, short too
        lines.append((r.name, r.state, r.revision or "-", commit, str(r.files) if r.files else "-",
                      human_bytes(r.bytes) if r.bytes else "-", r.installed_at or "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    out += [f"{r.name}: {r.detail}" for r in rows if r.detail]
    return "\n".join(out)


def to_json(rows: list[ModelStatus]) -> list[dict]:
    return [asdict(r) for r in rows]


def ahead(rows: list[ModelStatus], choice: Choice) -> bool:
    """Whether the target runs on a lock of its own that the given one does not equal (a refresh kept in
    the target); marks each model that lock moved ahead."""
    if not choice.own or (choice.given is not None and choice.given.to_json() == choice.lock.to_json()):
        return False
    for row in rows:
        mine, given = choice.lock.get(row.name), choice.given.get(row.name) if choice.given else None
        if mine is not None and given is not None and mine.version != given.version:
            row.ahead_of = given.commit or given.version
            row.detail = row.detail or f"ahead of {choice.given_path}, which pins {row.ahead_of[:12]}"
    return True


def make_permanent(choice: Choice, cfg) -> str:
    """What to run to make the target's own lock the committed one."""
    given = choice.given_path
    first = (f"ahead of {given}: the target runs on its own lock ({choice.kept.made()}), which later runs keep "
             f"until {given} changes" if choice.given is not None else
             f"the target runs on a lock of its own ({choice.path}): there is none at {given} to commit")
    if os.access(given.parent, os.W_OK):
        take = f"seeder lock --from-target -m {shlex.quote(cfg.manifest)} -t {shlex.quote(cfg.target)}"
        return f"{first}\nmake it permanent: {take} && git commit -m 'models: refresh' {shlex.quote(str(given))}"
    take = "seeder lock --from-target --output - > models.lock"
    return (f"{first}\nmake it permanent, where models.lock is committed: {take} && git commit -m 'models: refresh' "
            f"models.lock\n  (through Compose: docker compose run --rm -T {take})")


def run(args, cfg, net) -> int:
    import json

    target = target_of(cfg)
    manifest = lock = choice = None
    if Path(cfg.manifest).exists():
        manifest = manifests.load(Path(cfg.manifest))
        choice = choose_lock(manifest, target)
        lock = choice.lock
    elif not target.root.exists():
        raise UsageError(f"nothing to show: no manifest at {cfg.manifest} and no target at {target.root}")
    if target.state_file.exists() and not states.readable(target.state_file):
        log.warning("the target's state is unreadable: every model shows as missing until seeder runs again",
                    path=str(target.state_file))
    rows = status(target, manifest, lock, deep=args.deep, caches=local_caches(cfg))
    note = make_permanent(choice, cfg) if choice is not None and ahead(rows, choice) else None
    print(json.dumps(to_json(rows), indent=2) if args.json else render_table(rows) + (f"\n{note}" if note else ""))
    if modified := [r.name for r in rows if r.state == MODIFIED]:
        sys.stdout.flush()  # the table first, the error line last
        raise IntegrityError(f"modified since install: {', '.join(modified)} (seeder verify names each problem)")
    return OK
