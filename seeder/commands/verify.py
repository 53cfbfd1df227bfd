"""``seeder verify`` (or ``seeder --verify``): check every file of the target, exit 1 naming each problem."""

from __future__ import annotations

from .. import log
from ..errors import OK, IntegrityError
from ..fmt import count
from ..store.verify import verify
from . import checked_lock, target_of


def run(args, cfg, net) -> int:
    target = target_of(cfg)
    state = target.read_state()
    lock = checked_lock(cfg, target, state)
    if not target.managed():
        log.info("no .seeder/ in the target: checking the lock's files at <target>/<name>/<path>, read only",
                 target=str(target.root))
    problems = verify(target, lock, fast=args.fast, state=state)
    for p in problems:
        log.error("verify failed", model=p.model, file=p.path, problem=p.kind, detail=p.detail)
    files, mode = sum(len(m.files) for m in lock.models), "fast" if args.fast else "sha256"
    if problems:  # the summary is the error line a failure ends with, as every command's does
        raise IntegrityError(f"verify ({mode}): {count(len(problems), 'problem')}; "
                             f"{count(len(lock.models), 'model')}, {count(files, 'file')} checked")
    log.info("verify", models=len(lock.models), files=files, problems=0, mode=mode)
    return OK
