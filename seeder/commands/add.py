"""``seeder add SOURCE``: append one model to models.toml, resolve only it, pin it in models.lock.

SOURCE is a Hugging Face repo id, an http(s) URL, or an ``s3://`` object or prefix. A repo given
without ``--include`` gets the files serving needs (:mod:`seeder.spec.weights`), chosen from its file
list and shown before anything is written. Nothing is written unless the model resolves; other
models' lock entries are copied as they are.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .. import log
from ..errors import OK, RemoteError, UsageError
from ..fmt import count, human_bytes
from ..resolve import resolve
from ..settings import Network
from ..spec import lock as lockfile
from ..spec import weights
from ..spec.edit import append_model, parse_text
from ..spec.lock import Lock, LockedModel
from ..spec.manifest import Manifest, ModelSpec, RepoSource
from ..spec.paths import check_name
from . import write_edit

NEW_MANIFEST = ("# What seeder puts into the target. Resolved pins live in models.lock next to this file:\n"
                "# commit both.\n")
LISTED_FILES = 40
"""Files named one per line in the summary; more are counted."""


def kind_of(source: str) -> str:
    """``repo``, ``url`` (one file, http(s) or s3) or ``s3`` (every object under a prefix)."""
    scheme = urlsplit(source).scheme.lower()
    if scheme == "s3":
        key = urlsplit(source).path.lstrip("/")
        return "s3" if not key or key.endswith("/") else "url"
    return "url" if scheme in ("http", "https") else "repo"


def default_name(source: str, kind: str) -> str:
    if kind == "repo":
        base = source.rstrip("/").rsplit("/", 1)[-1]
    else:
        split = urlsplit(source)
        segments = [s for s in unquote(split.path).split("/") if s]
        base = segments[-1] if segments else split.netloc
        if kind == "url" and "." in base.strip("."):
            base = base.rsplit(".", 1)[0]  # the extension says nothing the file name doesn't
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base)
    name = re.sub(r"^[^A-Za-z0-9]+", "", name)[:128]
    if not name or check_name(name):
        raise UsageError(f"cannot make a model name from {source!r}; give one with --name")
    return name


def _check_flags(args, kind: str) -> None:
    flags = {"--revision": args.revision is not None, "--include": bool(args.include),
             "--exclude": bool(args.exclude), "--all-files": args.all_files, "--sha256": args.sha256 is not None}
    valid = {"repo": {"--revision", "--include", "--exclude", "--all-files"},
             "s3": {"--include", "--exclude", "--all-files"}, "url": {"--sha256"}}[kind]
    what = {"repo": "a Hugging Face repo", "s3": "an s3:// prefix", "url": "a single file URL"}[kind]
    wrong = [f for f, given in flags.items() if given and f not in valid]
    if wrong:
        raise UsageError(f"{wrong[0]} does not apply to {what} ({args.source!r}); it takes "
                         f"{', '.join(sorted(valid))}")
    if args.all_files and (args.include or args.exclude):
        raise UsageError("--all-files takes every file: give it or --include/--exclude, not both")


def table_for(args, kind: str, name: str) -> dict:
    """The ``[[models]]`` table, keys in the order the README documents them."""
    table: dict = {"name": name}
    if kind == "repo":
        table["repo"] = args.source
        if args.revision is not None:
            table["revision"] = args.revision
    else:
        table[kind] = args.source
        if args.sha256 is not None:
            table["sha256"] = args.sha256
    if args.include:
        table["include"] = list(args.include)
    if args.exclude:
        table["exclude"] = list(args.exclude)
    return table


def _defaults(table: dict, manifest: Manifest, net: Network) -> tuple[dict, str, str]:
    """The table with the excludes serving needs, chosen from the repo's file list; why; at which commit."""
    spec = manifest.get(table["name"])
    everything = Manifest(manifest.path, (ModelSpec(spec.name, RepoSource(spec.source.repo, spec.source.revision)),))
    listing = resolve(everything, [spec.name], net)[spec.name]
    selection = weights.select([f.path for f in listing.files])
    if selection.format == "gguf" and len(selection.weights) > 1:
        shown = ", ".join(selection.weights[:6]) + (", ..." if len(selection.weights) > 6 else "")
        raise UsageError(f"{table['repo']} has {len(selection.weights)} .gguf files ({shown}): pick one with "
                         "--include (e.g. --include '*Q4_K_M.gguf'), or take them all with --all-files")
    kept = f"weights as {selection.format}" if selection.format else "no weight files recognised"
    print(f"{table['name']}: {table['repo']} has {count(len(listing.files), 'file')}; {kept}, "
          "config and tokenizer files (--all-files takes every file)")
    note = f"seeder add: {kept}; {'other weight formats and ' if selection.format else ''}repo docs left out"
    return table | {"exclude": list(selection.exclude)}, note, listing.commit


def _show_globs(table: dict) -> None:
    if "repo" in table or "s3" in table:
        print(f"  include: {', '.join(table.get('include', [])) or 'every file'}")
        print(f"  exclude: {', '.join(table.get('exclude', [])) or 'nothing'}")
        sys.stdout.flush()  # before resolving: the choice is on screen while the hub answers


def _summary(model: LockedModel, manifest: Path, lock_path: Path, layout: str) -> None:
    where = f"{model.repo} at {model.revision}, commit {model.commit}" if model.kind == "repo" else model.urls[0]
    print(f"added {model.name!r} to {manifest} and {lock_path}: {where}")
    if layout == "hf-cache" and model.kind == "repo":
        print(f"  apps load it by id, {model.repo!r}, with HF_HOME=<target> and HF_HUB_OFFLINE=1")
    print(f"  {count(len(model.files), 'file')}, {human_bytes(model.total_size)}")
    for f in model.files[:LISTED_FILES]:
        print(f"  {human_bytes(f.size):>10}  {f.path}")
    if len(model.files) > LISTED_FILES:
        print(f"  ... and {len(model.files) - LISTED_FILES} more")
    print("run `seeder` to fetch it; commit both files")


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except FileNotFoundError:
        return NEW_MANIFEST
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None


def run(args, cfg, net) -> int:
    if net.offline:
        raise UsageError("seeder add resolves the model on the hub; it cannot run --offline")
    path = Path(cfg.manifest)
    kind = kind_of(args.source)
    _check_flags(args, kind)
    name = args.name if args.name is not None else default_name(args.source, kind)
    text = _read(path)
    lock_path = lockfile.lock_path_for(path)
    current = lockfile.read(lock_path) or Lock(models=())  # a damaged lock stops us before any request
    if parse_text(text, path).get(name):
        raise UsageError(f"{path} already has a model named {name!r}: choose another with --name, "
                         f"or `seeder remove {name}` first")
    table = table_for(args, kind, name)
    new_text, manifest = append_model(text, table, path)  # every check a manifest gets, before any request
    chosen_at = None
    if kind == "repo" and not args.include and not args.exclude and not args.all_files:
        table, note, chosen_at = _defaults(table, manifest, net)
        new_text, manifest = append_model(text, table, path, note)
    _show_globs(table)
    fresh = resolve(manifest, [name], net)
    if chosen_at is not None and fresh[name].commit != chosen_at:
        raise RemoteError(f"{table['repo']}@{table.get('revision', 'main')} moved while its files were chosen "
                          f"({chosen_at[:12]} -> {fresh[name].commit[:12]}); run seeder add again")
    lock = Lock(models=tuple(e for m in manifest.models if (e := fresh.get(m.name) or current.get(m.name))))
    write_edit(path, new_text, lock_path, lock, adding=True)
    log.info("model added", model=name, path=str(path), lock=str(lock_path))
    _summary(fresh[name], path, lock_path, manifest.layout)
    return OK

