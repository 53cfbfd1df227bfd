"""Command line: parse flags, run one command, map every failure to a documented exit code."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from . import __version__, log
from .fmt import human_bytes
from .errors import (EXIT_CODES_HELP, INTEGRITY, INTERNAL, INTERRUPTED, OK, TERMINATED, SeederError, StorageError,
                     Terminated, UsageError)

COMMANDS = ("seed", "verify", "lock", "refresh", "status", "export", "import", "export-image", "cache")

ENV_HELP = """\
environment:
  SEEDER_MANIFEST     manifest path (default ./models.toml)
  SEEDER_TARGET       target directory (default ./models)
  SEEDER_CACHE        content-addressed download cache (e.g. a BuildKit cache mount)
  SEEDER_LOG_FORMAT   auto | json | console
  SEEDER_CA_BUNDLE    CA bundle for TLS (REQUESTS_CA_BUNDLE and SSL_CERT_FILE also work)
  SEEDER_CONNECTIONS  parallel Range connections per large file (default 8; 1: one stream)
  SEEDER_PART_SIZE    bytes per Range request (default 16M); SEEDER_MULTIPART_MIN: files at least
                      this large are fetched in parts (default 16M)
  SEEDER_CONNECT_TIMEOUT, SEEDER_READ_TIMEOUT
                      seconds (default 10, 30); a stalled body counts as a read timeout
  SEEDER_RETRIES      attempts per request (default 5); SEEDER_BACKOFF_MAX: longest wait between
                      them in seconds (default 30)
  SEEDER_GRACE        seconds a replaced model version stays for readers (default 5)
  SEEDER_ALLOW_HTTP=1 same as --allow-http
  SEEDER_PROGRESS_INTERVAL
                      seconds between JSON progress events (default 5)
  HF_ENDPOINT         Hugging Face endpoint or mirror; huggingface.co URLs follow it too
  HF_TOKEN            token for gated or private repos; or a file: --token-file, HF_TOKEN_FILE,
                      /run/secrets/hf_token (Docker secret), huggingface's own token file
                      (HF_TOKEN_PATH, else HF_HOME/token)
  HF_HUB_OFFLINE=1    same as --offline"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other usage error
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("-m", "--manifest", default=os.environ.get("SEEDER_MANIFEST", "models.toml"),
                   help="manifest file (default: %(default)s; env SEEDER_MANIFEST)")
    g.add_argument("-t", "--target", default=os.environ.get("SEEDER_TARGET", "models"),
                   help="directory to fill (default: %(default)s; env SEEDER_TARGET)")
    g.add_argument("--cache", default=os.environ.get("SEEDER_CACHE") or None,
                   help="content-addressed download cache; the target gets hardlinks or copies (env SEEDER_CACHE)")
    g.add_argument("--offline", action="store_true", help="no network: seed from the lock and cache only")
    g.add_argument("--locked", action="store_true", help="fail (exit 2) if models.lock is missing or out of date")
    g.add_argument("--jobs", type=int, default=4, metavar="N", help="files transferred at once (default: 4)")
    g.add_argument("--connections", type=int, metavar="N",
                   help="parallel connections for one large file, 1 for a single stream (default: 8; "
                        "env SEEDER_CONNECTIONS)")
    g.add_argument("--token-file", metavar="PATH", help="read the hub token from this file")
    g.add_argument("--grace", type=float, metavar="SECONDS",
                   help="keep a replaced model version this long for readers mid-way (default: 5; env SEEDER_GRACE)")
    g.add_argument("--allow-http", action="store_true", default=os.environ.get("SEEDER_ALLOW_HTTP") == "1",
                   help="allow plain http:// to hosts other than localhost (env SEEDER_ALLOW_HTTP=1)")
    g.add_argument("--log-format", choices=("auto", "json", "console"),
                   default=os.environ.get("SEEDER_LOG_FORMAT", "auto"),
                   help="auto: JSON lines unless stderr is a terminal (default: %(default)s)")
    v = g.add_mutually_exclusive_group()
    v.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    v.add_argument("-v", "--verbose", action="store_true", help="debug output")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="seeder",
        formatter_class=fmt,
        description="Fill a directory (a Docker volume or ./models) with the model files a manifest "
        "lists: resolved into models.lock, downloaded with retries and resume, sha256-verified, "
        "installed atomically.",
        epilog="commands:\n  seeder [seed]       fill the target (the default command)\n"
        "  seeder verify       check the target (seeder --verify is the same)\n"
        "  seeder lock         resolve the manifest into models.lock\n"
        "  seeder refresh      re-resolve, fetch what changed, switch each model atomically\n"
        "  seeder status       what the target holds, per model\n"
        "  seeder export       write the target's models into one bundle (tar, .zst compressed)\n"
        "  seeder import       install a bundle, verified before anything becomes visible\n"
        "  seeder export-image save Docker images into one archive with a sha256 sidecar\n"
        "  seeder cache        du | prune the download cache\n\n"
        "options of every command (details: seeder COMMAND --help):\n"
        "  -m/--manifest PATH  -t/--target DIR  --cache DIR  --offline  --locked  --jobs N  --connections N\n"
        "  --grace SECONDS  --token-file PATH  --allow-http  --log-format auto|json|console  -q/--quiet|-v/--verbose\n\n"
        f"{ENV_HELP}\n\n{EXIT_CODES_HELP}",
    )
    parser.add_argument("--version", action="version", version=f"seeder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("seed", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                   help="fill the target from the manifest and its lock",
                   description="Fill the target. Uses models.lock when it matches the manifest, "
                   "otherwise resolves and rewrites it. A second run on an intact target makes no request.")
    p = sub.add_parser("verify", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="check every file in the target",
                       description="Check the target against the lock (or, without a manifest, against what "
                       "the target records as installed). Exit 1 names every problem.")
    p.add_argument("--fast", action="store_true", help="check presence and sizes only, no hashing")
    p = sub.add_parser("lock", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="resolve the manifest into models.lock",
                       description="Resolve models that are new or changed in the manifest into models.lock; "
                       "with --upgrade, resolve every model again (branches move forward).")
    p.add_argument("--upgrade", action="store_true", help="re-resolve every model, not only changed ones")
    p = sub.add_parser("refresh", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="re-resolve and update the target in place",
                       description="Re-resolve every model (branches and tags move forward), rewrite the lock, "
                       "fetch only new or changed files, switch each model atomically, and remove models the "
                       "manifest no longer lists. Readers that resolve <target>/<name> once see one version.")
    p.add_argument("--dry-run", action="store_true", help="show what would change; touch nothing")
    p.add_argument("--keep-removed", action="store_true", help="keep models the manifest no longer lists")
    p = sub.add_parser("status", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="show what the target holds",
                       description="Each model: revision, commit, files, bytes, installed-at and state "
                       "(complete, partial, missing, stale, extra; modified with --verify).")
    p.add_argument("--json", action="store_true", help="JSON on stdout instead of a table")
    p.add_argument("--verify", dest="deep", action="store_true", help="hash every file to detect modification")
    p = sub.add_parser("export", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="write the target's models, lock and checksums into one bundle")
    p.add_argument("-o", "--output", required=True, help="bundle file; zstd-compressed when it ends in .zst")
    p = sub.add_parser("import", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="install a bundle made by seeder export",
                       description="Check every file of the bundle against its lock before anything becomes "
                       "visible, then install atomically. A corrupt or truncated bundle exits 1, changing nothing.")
    p.add_argument("bundle", help="bundle file (.tar or .tar.zst)")
    p = sub.add_parser("export-image", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="save Docker images into one archive with a sha256 sidecar (needs seeder[docker])",
                       description="Load it on the air-gapped host with: sha256sum -c FILE.sha256 && "
                       "zstd -dc FILE | docker load")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, help="archive file; .zst or .gz compresses")
    p = sub.add_parser("cache", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="cache housekeeping: du, prune")
    p.add_argument("action", choices=("du", "prune"))
    p.add_argument("--keep", action="append", default=[], metavar="MANIFEST",
                   help="prune: also keep what this manifest's lock references (repeatable)")
    p.add_argument("--keep-days", type=float, metavar="N", help="prune: only delete blobs older than N days")
    return parser


def _normalise(argv: list[str]) -> list[str]:
    """``seeder --verify ...`` is ``seeder verify ...``; no command means ``seed``."""
    if "--verify" in argv and argv[0] not in COMMANDS:
        argv = ["verify", *[a for a in argv if a != "--verify"]]
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["seed", *argv]
    return argv


def run() -> None:
    """The ``seeder`` command: :func:`main`, then exit without the interpreter's teardown."""
    code = main()
    # Everything is written, fsynced and renamed by now; tearing down modules and threads would only add
    # ~15 ms to every run, a container's start-up among them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = _normalise(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    log.configure(args.log_format, -1 if args.quiet else (1 if args.verbose else 0))
    signal.signal(signal.SIGTERM, _terminate)
    try:
        net = _network(args)
        log.configure(args.log_format, -1 if args.quiet else (1 if args.verbose else 0), secrets=(net.token or "",))
        if args.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        if args.grace is None:
            from .config import env_float

            args.grace = env_float("SEEDER_GRACE", 5.0)
        handler = {"seed": _seed, "verify": _verify, "lock": _lock, "refresh": _refresh, "status": _status,
                   "export": _export, "import": _import, "export-image": _export_image, "cache": _cache}
        return handler[args.command](args, net)
    except SeederError as e:
        log.error(log.redact(str(e)), exit_code=e.exit_code)
        return e.exit_code
    except KeyboardInterrupt as e:
        code = TERMINATED if isinstance(e, Terminated) else INTERRUPTED
        log.error("interrupted: what arrived is kept, and the next run resumes it", exit_code=code)
        # Exit now rather than wait for the transfers in flight: every partial on disk is consistent at
        # any instant (the SIGKILL tests hold it to that), so there is nothing to finish first.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    except OSError as e:
        err = StorageError(f"{e.filename or ''}: {e.strerror or e}")
        log.error(log.redact(str(err)), exit_code=err.exit_code)
        return err.exit_code
    except Exception as e:  # a bug: say so in one line, trace only when asked
        if args.verbose:
            import traceback

            log.error(log.redact(traceback.format_exc()))
        log.error(log.redact(f"internal error: {type(e).__name__}: {e} (please report; -v shows the trace)"),
                  exit_code=INTERNAL)
        return INTERNAL


def _terminate(signum, frame) -> None:
    raise Terminated


def _network(args):
    from .config import network_from_env

    return network_from_env(offline=args.offline, allow_http=args.allow_http, token_file=args.token_file,
                            connections=args.connections)


def _paths(args):
    from . import manifest
    from .store import Cache, Target

    return (manifest.load(Path(args.manifest)), Target(Path(args.target)),
            Cache(Path(args.cache)) if args.cache else None)


def _seed(args, net) -> int:
    from .seed import seed

    manifest, target, cache = _paths(args)
    summary = seed(manifest, target, cache, net, locked=args.locked, jobs=args.jobs, grace=args.grace)
    summary.emit()
    return OK


def _verify(args, net) -> int:
    from .seed import obtain_lock
    from .store import Target
    from .verify import installed_lock, verify

    target = Target(Path(args.target))
    state = target.read_state()
    if Path(args.manifest).exists():
        manifest, _, _ = _paths(args)
        lock = obtain_lock(manifest, target, locked=True, net=None)
    else:
        lock = installed_lock(state)
        if not lock.models:
            raise UsageError(f"no manifest at {args.manifest} and nothing installed in {target.root}")
    problems = verify(target, lock, fast=args.fast, state=state)
    for p in problems:
        log.error("verify failed", model=p.model, file=p.path, problem=p.kind, detail=p.detail)
    files = sum(len(m.files) for m in lock.models)
    log.info("verify", models=len(lock.models), files=files, problems=len(problems),
             mode="fast" if args.fast else "sha256")
    return INTEGRITY if problems else OK


def _lock(args, net) -> int:
    from . import lock as lockfile
    from .lock import Lock
    from .resolve import resolve
    from .seed import save_lock
    from .transfer import Client

    manifest, target, _ = _paths(args)
    if net.offline:
        raise UsageError("seeder lock needs the hub; it cannot run --offline")
    path = lockfile.lock_path_for(manifest.path)
    current = lockfile.read(path) or Lock(models=())
    names = [m.name for m in manifest.models] if args.upgrade else current.stale_models(manifest)
    fresh = resolve(manifest, names, net, Client(net))
    save_lock(current.updated(manifest, fresh), path, target=None)
    return OK


def _refresh(args, net) -> int:
    from .refresh import refresh

    if net.offline:
        raise UsageError("seeder refresh needs the hub; it cannot run --offline")
    manifest, target, cache = _paths(args)
    summary = refresh(manifest, target, cache, net, jobs=args.jobs, dry_run=args.dry_run,
                      keep_removed=args.keep_removed, grace=args.grace)
    if not args.dry_run:
        summary.emit()
    return OK


def _status(args, net) -> int:
    import json

    from . import manifest as manifests
    from .seed import current_lock
    from .status import render_table, status, to_json
    from .store import Target

    target = Target(Path(args.target))
    manifest = lock = None
    if Path(args.manifest).exists():
        manifest = manifests.load(Path(args.manifest))
        lock = current_lock(manifest, target)
    rows = status(target, manifest, lock, deep=args.deep)
    print(json.dumps(to_json(rows), indent=2) if args.json else render_table(rows))
    return OK


def _export(args, net) -> int:
    from .bundle import export
    from .store import Target

    files = export(Target(Path(args.target)), Path(args.output))
    log.info("exported", output=args.output, files=files)
    return OK


def _import(args, net) -> int:
    from .bundle import import_bundle
    from .store import Target

    summary = import_bundle(Path(args.bundle), Target(Path(args.target)), args.jobs)
    summary.emit()
    return OK


def _export_image(args, net) -> int:
    from .images import export_images, load_command

    digest = export_images(args.images, Path(args.output))
    log.info("images exported", output=args.output, images=args.images, sha256=digest,
             load=load_command(Path(args.output)))
    return OK


def _cache(args, net) -> int:
    from .housekeeping import du, prune, referenced
    from .store import Cache

    if not args.cache:
        raise UsageError("seeder cache needs --cache DIR (or SEEDER_CACHE)")
    cache = Cache(Path(args.cache))
    if args.action == "du":
        usage = du(cache)
        print(f"{usage.blobs} files, {human_bytes(usage.bytes)} in {cache.root}"
              + (f"; {usage.partials} partial downloads, {human_bytes(usage.partial_bytes)}" if usage.partials else ""))
        return OK
    keep = referenced([Path(p) for p in (args.manifest, *args.keep)])
    removed = prune(cache, keep, args.keep_days)
    log.info("cache pruned", files=removed.blobs + removed.partials, bytes=removed.bytes + removed.partial_bytes,
             kept=len(keep))
    return OK


if __name__ == "__main__":
    sys.exit(main())
