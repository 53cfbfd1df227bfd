"""``seeder export`` and ``seeder import``: the models a lock lists, that lock and checksums in one tar
(zstd when the name ends in .zst), for air-gapped hosts.

Import verifies every byte against the bundled lock in a staging area first, then installs it
through :func:`seeder.install.install` like any other lock, so a bad bundle changes nothing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path

from .. import log
from ..errors import OK, IntegrityError, LockError, UsageError
from ..fetch.partial import partial_path
from ..install import Summary, install
from ..integrity import ContentMismatch, Hasher, HashingReader
from ..spec.lock import Lock, LockedFile, parse
from ..store import Cache, Target
from ..store.fs import copy_hashed, storage_error
from ..store.state import State
from ..store.verify import verify
from . import checked_lock, load_manifest, target_of

LOCK_NAME, SUMS_NAME, PREFIX = "models.lock", "SHA256SUMS", "models/"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _open_output(path: Path, compress: bool):
    raw = open(path, "wb")
    if compress:
        import zstandard

        return raw, zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(raw, closefd=False)
    return raw, raw


def export(target: Target, lock: Lock, output: Path, state: State) -> int:
    """Write the bundle of ``lock``'s models; returns the number of files. A model not installed as the lock
    pins it, or a file that no longer matches, aborts it."""
    if problems := verify(target, lock, fast=True, state=state):
        raise IntegrityError(f"{target.root} is not intact ({problems[0]}); run seeder first")
    if left := sorted(name for name in state if lock.get(name) is None):
        # An import installs whatever a bundle holds: a model the manifest dropped would come back to life.
        log.info("left out of the bundle: installed, but not in the lock (seeder refresh removes them)",
                 models=left)
    members = [(m, f) for m in lock.models for f in m.files]
    sums = "".join(f"{state[m.name].sha256(f.path)}  {PREFIX}{m.name}/{f.path}\n" for m, f in members)
    tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
    total = sum(f.size for _, f in members)
    done, last = 0, time.monotonic()
    try:
        raw, stream = _open_output(tmp, compress=output.name.endswith(".zst"))  # tmp's name ends in .tmp<pid>
        with raw:
            with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name, data in ((LOCK_NAME, lock.dumps().encode()), (SUMS_NAME, sums.encode())):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                    tar.addfile(info, io.BytesIO(data))
                for model, file in members:
                    path = target.path_of(model, file.path)
                    info = tarfile.TarInfo(f"{PREFIX}{model.name}/{file.path}")
                    info.size, info.mode, info.mtime = file.size, 0o644, int(path.stat().st_mtime)
                    with open(path, "rb") as fh:
                        reader = HashingReader(fh, Hasher(file))
                        tar.addfile(info, io.BufferedReader(reader, 1 << 20))
                    reader.hasher.check()
                    done += file.size
                    if time.monotonic() - last > 2 or done == total:
                        last = time.monotonic()
                        log.info("progress", model=model.name, file=file.path, bytes=done, total=total)
            if stream is not raw:
                stream.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, output)
    except ContentMismatch as e:
        tmp.unlink(missing_ok=True)
        raise IntegrityError(f"a file changed on disk while exporting: {e}") from None
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise storage_error(e, "write", output) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(members)


def _open_input(path: Path):
    try:
        raw = open(path, "rb")
    except (FileNotFoundError, IsADirectoryError):
        raise UsageError(f"{path}: no such bundle file") from None
    except OSError as e:
        raise storage_error(e, "read", path) from None
    if raw.read(4) == _ZSTD_MAGIC:
        raw.seek(0)
        import zstandard

        return raw, zstandard.ZstdDecompressor().stream_reader(raw)
    raw.seek(0)
    return raw, raw


def import_bundle(path: Path, target: Target, jobs: int, grace: float, layout: str | None = None) -> Summary:
    """Verify the whole bundle into staging, then install it like a refresh, with no network, in the
    manifest's ``layout`` (None: the target's own)."""
    target.ensure()
    staging = Cache(target.meta / f"import-{os.getpid()}")
    staging.ensure()
    try:
        lock, verified = _unpack_verified(path, staging)
        _say_what_it_replaces(target, lock)
        # Every staged blob was hashed on its way in: hashing it again on its way into the target would
        # read the whole bundle a second time.
        return install(lock, target, caches=[staging], jobs=jobs, grace=grace, record_lock=True, layout=layout,
                       verified=verified)
    finally:
        shutil.rmtree(staging.root, ignore_errors=True)


def _say_what_it_replaces(target: Target, lock: Lock) -> None:
    """A bundle may be older than what is installed: never replace a model without saying so."""
    state = target.read_state()
    for model in lock.models:
        old = state.get(model.name)
        if old is not None and old.version != model.version:
            log.warning("the bundle replaces an installed model", model=model.name,
                        installed=old.model.commit or old.version, bundle=model.commit or model.version,
                        installed_at=old.installed_at)


def _unpack_verified(path: Path, staging: Cache) -> tuple[Lock, dict[Path, str]]:
    """The bundle's lock, and each staged blob with its sha256, once every member checked out."""
    import zstandard

    raw, stream = _open_input(path)
    lock: Lock | None = None
    sums: dict[str, str] = {}
    wanted: dict[str, LockedFile] = {}
    verified: dict[Path, str] = {}
    try:
        with raw, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if lock is None:
                    lock = _read_lock(tar, member, path)
                    wanted = {f"{PREFIX}{m.name}/{f.path}": f for m in lock.models for f in m.files}
                elif member.name == SUMS_NAME and not sums:
                    sums = _read_sums(tar, member)
                else:
                    file = wanted.pop(member.name, None)
                    sha256 = _stage(tar, member, file, sums, staging, path)  # raises unless file is one
                    verified[staging.blob(file)] = sha256
    except (tarfile.TarError, EOFError, zstandard.ZstdError) as e:
        raise IntegrityError(f"{path}: bundle is truncated or corrupt ({type(e).__name__}: {e})") from None
    if lock is None:
        raise IntegrityError(f"{path}: empty bundle")
    if wanted:
        raise IntegrityError(f"{path}: bundle is missing {', '.join(sorted(wanted)[:5])}")
    return lock, verified


def _read_lock(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> Lock:
    if member.name != LOCK_NAME or not member.isfile() or member.size > 64 << 20:
        raise IntegrityError(f"{path}: not a seeder bundle (it must start with {LOCK_NAME})")
    try:
        return parse(json.loads(tar.extractfile(member).read()), f"{path}:{LOCK_NAME}")
    except (ValueError, LockError) as e:
        raise IntegrityError(f"{path}: the bundled lock is unreadable: {e}") from None


def _read_sums(tar: tarfile.TarFile, member: tarfile.TarInfo) -> dict[str, str]:
    sums = {}
    for line in tar.extractfile(member).read().decode("utf-8", "replace").splitlines():
        digest, _, name = line.partition("  ")
        sums[name] = digest
    return sums


def _stage(tar, member, file: LockedFile | None, sums: dict[str, str], staging: Cache, path: Path) -> str:
    """Hash ``member`` into ``staging``'s blob for ``file``, checked against the lock and the sums; its sha256."""
    if file is None or not member.isfile():
        raise IntegrityError(f"{path}: unexpected or duplicate member {member.name!r}")
    if member.size != file.size:
        raise IntegrityError(f"{path}: {member.name} is {member.size} bytes, the lock says {file.size}")
    blob = staging.blob(file)
    part = partial_path(staging.tmp, file)
    hasher = Hasher(file)
    try:
        copy_hashed(tar.extractfile(member), part, hasher)
        digest = hasher.check()
    except ContentMismatch as e:
        raise IntegrityError(f"{path}: {member.name}: {e}") from None
    except OSError as e:
        raise storage_error(e, "write", part) from None
    if sums.get(member.name) != digest:
        raise IntegrityError(f"{path}: {member.name} does not match {SUMS_NAME}")
    os.replace(part, blob)
    return digest


def run(args, cfg, net) -> int:
    if args.command == "export":
        target = target_of(cfg)
        state = target.read_state()
        lock = checked_lock(cfg, target, state)
        files = export(target, lock, Path(args.output), state)
        log.info("exported", output=args.output, models=[m.name for m in lock.models], files=files)
    else:
        layout = load_manifest(cfg).layout if Path(cfg.manifest).is_file() else None
        import_bundle(Path(args.bundle), target_of(cfg), cfg.jobs, cfg.grace, layout).emit()
    return OK
