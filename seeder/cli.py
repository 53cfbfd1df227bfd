"""Command line: parse flags, run one command, map every failure to a documented exit code."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap

from . import __version__, log, settings
from .commands import COMMANDS, command
from .errors import (EXIT_CODES_HELP, INTERNAL, INTERRUPTED, OUTPUT_CLOSED, TERMINATED, SeederError, StorageError,
                     Terminated)


DISTRIBUTION = "model-seeder"
"""The name pip installs seeder by: `seeder` on PyPI is an unrelated project."""


def version() -> str:
    """The installed distribution's version; the package's own when run from a source tree never installed."""
    from importlib.metadata import PackageNotFoundError, version as installed  # --version only: start-up stays lean

    try:
        return installed(DISTRIBUTION)
    except PackageNotFoundError:
        return __version__


class _Version(argparse.Action):
    """``--version``, asking the installed metadata only when given."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"seeder {version()} ({DISTRIBUTION})")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other usage error
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def _print_message(self, message: str, file=None) -> None:
        # argparse swallows a closed pipe here, so `seeder --help | head` would exit 0 or 141 depending on
        # buffering; every other write lets run() see it.
        if message:
            (file or sys.stderr).write(message)


def _common() -> argparse.ArgumentParser:
    """The options every command takes, from the settings table."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    for s in settings.SETTINGS:
        if s.flag is None:
            continue
        names = [n for n in (s.short, s.flag) if n]
        env = ", ".join(s.env)
        if s.is_switch:
            g.add_argument(*names, dest=s.key, action="store_true", help=s.help + (f" (env {env})" if env else ""))
            continue
        extra = "; ".join(x for x in ("" if s.default in (None, ()) else f"default: {settings.show(s.default)}",
                                        f"env {env}" if env else "") if x)
        g.add_argument(*names, dest=s.key, metavar=s.metavar, action="append" if s.repeats else "store",
                       help=s.help + (f" ({extra})" if extra else ""))
    v = g.add_mutually_exclusive_group()
    v.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    v.add_argument("-v", "--verbose", action="store_true", help="debug output")
    return p


def _days(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{raw!r} must not be negative")
    return value


def _options_summary() -> str:
    flags = [f"{s.short + '/' if s.short else ''}{s.flag}{' ' + s.metavar if s.metavar else ''}"
             for s in settings.SETTINGS if s.flag]
    return textwrap.fill("  ".join([*flags, "-q/--quiet|-v/--verbose"]), 100, initial_indent="  ",
                         subsequent_indent="  ", break_on_hyphens=False, break_long_words=False)


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(
        prog="seeder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fill a directory (a Docker volume or ./models) with the model files a manifest "
        "lists: resolved into models.lock, downloaded with retries and resume, sha256-verified, "
        "installed atomically.",
        epilog="commands:\n  seeder [seed]       fill the target (the default command); --prune: then remove "
        "what the lock does not list\n"
        "  seeder verify       check the target (seeder --verify is the same)\n"
        "  seeder lock         resolve the manifest into models.lock\n"
        "  seeder refresh      re-resolve, fetch what changed, switch each model atomically\n"
        "  seeder status       what the target holds, per model\n"
        "  seeder export       write the models the lock lists into one bundle (tar, .zst compressed)\n"
        "  seeder import       install a bundle, verified before anything becomes visible\n"
        "  seeder export-image save Docker images into one archive with a sha256 sidecar\n"
        "  seeder cache        du | prune the caches; push a target's files to an s3:// cache\n"
        "  seeder push         publish each model to an OCI registry (CNCF ModelPack artifacts)\n"
        "  seeder add          add a model to models.toml and pin it in models.lock\n"
        "  seeder remove       drop a model from models.toml and models.lock\n"
        "  seeder schema       print the JSON Schema of models.toml (for editors)\n\n"
        "options of every command (details: seeder COMMAND --help):\n"
        f"{_options_summary()}\n\n{settings.env_help()}\n\n{EXIT_CODES_HELP}",
    )
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    _add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser), common)
    return parser


def _add_commands(sub, common: argparse.ArgumentParser) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("seed", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="fill the target from the manifest and its lock",
                       description="Fill the target. Uses models.lock when it matches the manifest, "
                       "otherwise resolves and rewrites it. A second run on an intact target makes no request.")
    p.add_argument("--prune", action="store_true",
                   help="then remove models the lock does not list and every other version of the models it "
                        "lists (older ones after --grace); asks no network: with --locked, the committed lock alone")
    p = sub.add_parser("verify", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="check every file in the target",
                       description="Check the target against the lock (or, without a manifest, against what "
                       "the target records as installed). Exit 1 names every problem.")
    p.add_argument("--fast", action="store_true", help="check presence and sizes only, no hashing")
    p = sub.add_parser("refresh", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="re-resolve and update the target in place",
                       description="Re-resolve every model (branches and tags move forward), rewrite the lock, "
                       "fetch only new or changed files, switch each model atomically, and remove models the "
                       "manifest no longer lists. Readers that resolve <target>/<name> once see one version.")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan on stdout, one line per model (add, update, remove, unchanged: files, "
                        "bytes, old -> new commit); touch nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.add_argument("--exit-code", action="store_true",
                   help="with --dry-run: exit 10 when something would change, 0 when nothing would")
    p.add_argument("--keep-removed", action="store_true", help="keep models the manifest no longer lists")
    p = sub.add_parser("status", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="show what the target holds",
                       description="Each model: revision, commit, files, bytes, installed-at and state "
                       "(complete; partial: downloading, not installed yet; missing; stale; extra; modified: "
                       "installed files changed since install); whether the target runs on a lock of its own, ahead "
                       "of the given one. Exit 1 when a model is modified, as verify would.")
    p.add_argument("--json", action="store_true", help="JSON on stdout instead of a table")
    p.add_argument("--verify", dest="deep", action="store_true",
                   help="hash every file: a change that keeps a file's size shows as modified too")
    p = sub.add_parser("export", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="write the models the lock lists, the lock and checksums into one bundle",
                       description="Bundle the models the manifest's lock lists (without a manifest: every model "
                       "the target records), each checked against the lock, for seeder import on another host.")
    p.add_argument("-o", "--output", required=True, help="bundle file; zstd-compressed when it ends in .zst")
    p = sub.add_parser("import", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="install a bundle made by seeder export",
                       description="Check every file of the bundle against its lock before anything becomes "
                       "visible, then install atomically. A corrupt or truncated bundle exits 1, changing nothing.")
    p.add_argument("bundle", help="bundle file (.tar or .tar.zst)")
    p = sub.add_parser("export-image", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="save Docker images into one archive with a sha256 sidecar (needs model-seeder[docker])",
                       description="Load it on the air-gapped host with: sha256sum -c FILE.sha256 && "
                       "zstd -dc FILE | docker load")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, help="archive file; .zst or .gz compresses")
    p = sub.add_parser("cache", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="caches: du, prune; push a target's files to an s3:// cache")
    p.add_argument("action", choices=("du", "prune", "push"))
    p.add_argument("--keep", action="append", default=[], metavar="MANIFEST",
                   help="prune: also keep what this manifest's lock references (repeatable)")
    p.add_argument("--keep-days", type=_days, metavar="N", help="prune: only delete blobs older than N days (N >= 0)")
    _add_editing_commands(sub, common)


def _add_editing_commands(sub, common: argparse.ArgumentParser) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("lock", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="resolve the manifest into models.lock",
                       description="Resolve models that are new or changed in the manifest into models.lock; "
                       "with --upgrade, resolve every model again (branches move forward); with --from-target, "
                       "take the lock the target runs on.")
    p.add_argument("--upgrade", action="store_true", help="re-resolve every model, not only changed ones")
    p.add_argument("--from-target", action="store_true",
                   help="resolve nothing: write the lock the target runs on (one a refresh kept in it, where the "
                        "manifest's directory was read-only), to commit it")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="with --from-target: write there instead of beside the manifest; - prints it on stdout")
    p = sub.add_parser("add", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="add a model to models.toml, resolve it, pin it in models.lock",
                       description="Append a [[models]] table to the manifest (comments and layout kept), resolve "
                       "only that model and write the lock; other models' entries are not touched. A repo "
                       "without --include gets the files serving needs: the weights in one format (safetensors "
                       "first) plus config and tokenizer files; the choice is printed. On any error neither "
                       "file changes.")
    p.add_argument("source", metavar="SOURCE",
                   help="a Hugging Face repo (org/name), an http(s) URL of one file, s3://bucket/key or "
                        "s3://bucket/prefix/")
    p.add_argument("--name", help="the model's name (its directory in the target); default: from SOURCE")
    p.add_argument("--revision", help="repo: branch, tag or commit (default: main)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB", help="repo/s3: files to take (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="repo/s3: files to leave (repeatable)")
    p.add_argument("--all-files", action="store_true", help="repo: take every file, no default excludes")
    p.add_argument("--sha256", help="URL: the file's sha256 (needed unless the server publishes it, as the hub does)")
    p = sub.add_parser("remove", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="drop a model from models.toml and models.lock",
                       description="Remove a model's [[models]] table and its lock entry. The target keeps its "
                       "files until `seeder --prune` (from the lock alone) or `seeder refresh` removes them.")
    p.add_argument("name", metavar="NAME")
    p = sub.add_parser("push", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                       help="publish each model to an OCI registry as a CNCF ModelPack artifact",
                       description="Push each model of a completely seeded target to REGISTRY/NAMESPACE/<name>:TAG, "
                       "one raw layer per file; blobs the registry has are not sent again. Prints '<name> "
                       "<reference>@<digest>' per model. Credentials as docker login / REGISTRY_AUTH_FILE leave them. "
                       "Exit 1: the target is not completely seeded, or a file no longer matches; 3: the registry "
                       "refused (access, or a limit: manifest size, layers).")
    p.add_argument("destination", metavar="REGISTRY/NAMESPACE")
    p.add_argument("--tag", default="latest", help="the tag of every model pushed (default: latest)")
    p.add_argument("--write-manifest", metavar="FILE", help="write a models.toml whose models are the pushed "
                   "digests, and its lock beside it: seeder --locked seeds from the registry alone")
    sub.add_parser("schema", parents=[common], formatter_class=fmt, epilog=EXIT_CODES_HELP,
                   help="print the JSON Schema of models.toml",
                   description="Print the JSON Schema (draft-07) models.toml follows, for TOML language servers: "
                   "seeder schema > models.schema.json, then start models.toml with "
                   "#:schema ./models.schema.json")


_TAKES_VALUE = {n for s in settings.SETTINGS if s.flag and not s.is_switch for n in (s.short, s.flag) if n} | {
    "-o", "--output", "--keep", "--keep-days", "--name", "--revision", "--include", "--exclude",
    "--sha256", "--tag", "--write-manifest"}  # the commands' own options that take a value


def _normalise(argv: list[str]) -> list[str]:
    """The command first, wherever it was given (``seeder -m x.toml status``, as git and uv allow);
    ``seeder --verify ...`` is ``seeder verify ...``; no command means ``seed``."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in _TAKES_VALUE:
            i += 2
            continue
        if token == "--":
            break
        if not token.startswith("-"):
            if token not in COMMANDS:
                build_parser().error(f"unknown command {token!r}; the commands are {', '.join(COMMANDS)}")
            return [token, *argv[:i], *argv[i + 1:]]
        i += 1
    if "--verify" in argv:
        return ["verify", *[a for a in argv if a != "--verify"]]
    if not argv or not {"-h", "--help", "--version"} & set(argv[:1]):
        return ["seed", *argv]
    return argv


def run() -> None:
    """The ``seeder`` command: :func:`main`, then exit without the interpreter's teardown."""
    try:
        try:
            code = main()
        except SystemExit as e:  # argparse: --help, --version, a bad flag; its output still has to be flushed
            code = e.code if isinstance(e.code, int) else 0
        # Everything is written, fsynced and renamed by now; tearing down modules and threads would only add
        # ~15 ms to every run, a container's start-up among them.
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = _reader_gone()
    os._exit(code)


def _closed_outputs() -> list[int]:
    """stdout and stderr, those whose reader has gone: a pipe whose far end was closed, a socket shut down."""
    import select

    poll = select.poll()
    for fd in (1, 2):
        poll.register(fd, select.POLLOUT)
    return [fd for fd, events in poll.poll(0) if events & (select.POLLERR | select.POLLHUP)]


def _reader_gone() -> int:
    """``seeder status | head``: the reader had what it wanted. Stop without a word, as a tool that SIGPIPE
    ends does; an error line would only go to a closed pipe, or mislead where it still can be read."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in _closed_outputs():
        os.dup2(devnull, fd)  # a line another thread logs before we exit must not raise again
    return OUTPUT_CLOSED


def main(argv: list[str] | None = None) -> int:
    argv = _normalise(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    verbosity = -1 if args.quiet else (1 if args.verbose else 0)
    log.configure("auto", verbosity)  # until the settings are read, so that a bad one is reported too
    signal.signal(signal.SIGTERM, _terminate)
    try:
        cfg = settings.load(vars(args))
        log.configure(cfg.log_format, verbosity, progress_interval=cfg.progress_interval)
        net = cfg.network()
        secrets = (net.token or "", os.environ.get("AWS_SECRET_ACCESS_KEY", ""), os.environ.get("AWS_SESSION_TOKEN", ""))
        log.configure(cfg.log_format, verbosity, secrets=secrets, progress_interval=cfg.progress_interval)
        return command(args.command).run(args, cfg, net)
    except SeederError as e:
        log.error(log.redact(str(e)), exit_code=e.exit_code)
        return e.exit_code
    except KeyboardInterrupt as e:
        code = TERMINATED if isinstance(e, Terminated) else INTERRUPTED
        if parts := sys.modules.get("seeder.fetch.parts"):  # loaded only when something was downloading
            parts.save_running()
        log.error("interrupted: what arrived is kept, and the next run resumes it", exit_code=code)
        # Exit now rather than wait for the transfers in flight: every partial on disk is consistent at
        # any instant (the SIGKILL tests hold it to that), so there is nothing to finish first.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    except OSError as e:
        if isinstance(e, BrokenPipeError) and _closed_outputs():
            raise  # our own output's reader went away, not a disk or a server: run() ends quietly
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


if __name__ == "__main__":
    sys.exit(main())
