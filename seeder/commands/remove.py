"""``seeder remove NAME``: drop a model from models.toml and models.lock; the target is left alone."""

from __future__ import annotations

from .. import log
from ..errors import OK, ManifestError, UsageError
from ..spec import lock as lockfile
from ..spec.edit import remove_model
from ..spec.lock import Lock
from . import load_manifest, write_edit


def run(args, cfg, net) -> int:
    manifest = load_manifest(cfg)
    path = manifest.path
    if manifest.get(args.name) is None:
        names = ", ".join(m.name for m in manifest.models) or "none"
        raise UsageError(f"{path} has no model named {args.name!r} (its models: {names})")
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        raise ManifestError(path, f"cannot read: {e.strerror}") from None
    new_text, _ = remove_model(text, args.name, path)
    lock_path = lockfile.lock_path_for(path)
    current = lockfile.read(lock_path)
    lock = None
    if current is not None and current.get(args.name) is not None:
        lock = Lock(models=tuple(m for m in current.models if m.name != args.name))
    write_edit(path, new_text, lock_path, lock, adding=False)
    log.info("model removed", model=args.name, path=str(path))
    print(f"removed {args.name!r} from {path}{f' and {lock_path}' if lock is not None else ''}; "
          f"its files stay in the target until `seeder --prune` (or `seeder refresh`) removes them")
    return OK
