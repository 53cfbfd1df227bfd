"""Unpack one OCI tar layer (a ModelPack, KitOps or image layer) into a new directory, in one read.

The blob is read once, as a stream: its raw bytes are hashed against the layer digest as they are read,
decompressed, and each regular file is written into a staging directory beside ``dest``, hashed as it is
written. Only a layer that was read to its end, matched its digest and held nothing refused is renamed
to ``dest``; anything else removes the staging directory, so ``dest`` is all of a layer or absent.

A layer is untrusted input. Only regular files and directories are unpacked; a link, a device, a FIFO,
an absolute name, a ``..`` segment, a name twice, a whiteout: the whole layer is refused, naming the
member. The tar's modes, owners and times are not kept: model files are data.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import secrets
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import IntegrityError, StorageError
from .integrity import HashingReader
from .spec.paths import check_relpath
from .store.fs import fsync_dir, storage_error

CHUNK = 1 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# What follows ".tar" in a layer's media type: OCI and ModelPack write "+gzip"/"+zstd", Docker's
# rootfs.diff layers ".gzip".
_COMPRESSIONS = {"": "", "+gzip": "gzip", ".gzip": "gzip", "+zstd": "zstd"}
_TAR = re.compile(r"[a-z0-9.+-]+/[a-z0-9.+-]*[.+]tar([.+][a-z0-9]+)?")
_KINDS = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a character device",
          tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a FIFO"}


class LayerMismatch(IntegrityError):
    """The blob is not the layer its digest names (a download went wrong): discard it, fetching again may help."""


class BadLayer(IntegrityError):
    """The layer itself is refused: a member that is not a plain file or directory, an unsafe or duplicate
    name, an unreadable archive, an unknown compression. Its bytes matched the digest (or were never read),
    so fetching it again will not help."""


@dataclass(frozen=True)
class Member:
    """A regular file unpacked from a layer."""

    path: str
    """Relative to ``dest``, with ``/`` separators (after ``strip``)."""
    size: int
    sha256: str
    """Hex digest of the bytes written."""


def compression(media_type: str) -> str | None:
    """How a tar layer of this media type is compressed: ``""`` (plain tar), ``"gzip"`` or ``"zstd"``;
    None when it is not a tar layer (a ``.raw`` ModelPack layer, a JSON config): the blob is the file.

    Recognised by suffix, so every family that ends in ``.tar``, ``.tar+gzip``, ``.tar+zstd`` or Docker's
    ``.tar.gzip`` is one: ``application/vnd.cncf.model.weight.v1.tar+zstd``, the older
    ``application/vnd.cnai.model.*``, ``application/vnd.kitops.modelkit.model.v1.tar+gzip``,
    ``application/vnd.oci.image.layer.v1.tar``. A tar with another encoding (``.tar+encrypted``) raises
    :class:`BadLayer` rather than pass for a raw file.
    """
    base = media_type.partition(";")[0].strip().lower()
    found = _TAR.fullmatch(base)
    if not found:
        return None
    kind = _COMPRESSIONS.get(found.group(1) or "")
    if kind is None:
        raise BadLayer(f"layer media type {media_type!r}: unsupported tar encoding {found.group(1)!r} "
                       "(plain, gzip and zstd tar layers are)")
    return kind


def unpack(blob: Path, media_type: str, digest: str, dest: Path, *, strip: str = "") -> list[Member]:
    """Unpack the tar layer in ``blob`` to ``dest`` (which must not exist), checked against ``digest``
    (``sha256:<hex>`` of the blob's bytes, compressed as they are); the regular files written, in the
    archive's order.

    ``strip``: a leading directory (``models`` or ``opt/models``) whose contents become ``dest``'s;
    members not under it are skipped, unchecked, as nothing of them is written (a modelcar image's base
    layers hold a whole root filesystem).

    Raises :class:`LayerMismatch` when the blob's bytes are not the layer's, :class:`BadLayer` when the
    layer is refused (both exit 1), ``StorageError`` (exit 4) when ``dest`` exists or a read or write
    fails, ``ValueError`` for a ``strip`` that ``spec.paths.check_relpath`` refuses (check it at parse time).
    """
    kind = compression(media_type)
    if kind is None:
        raise BadLayer(f"layer {digest}: media type {media_type!r} is not a tar layer")
    if not _DIGEST.fullmatch(digest):
        raise BadLayer(f"layer digest {digest!r}: only sha256:<64 lowercase hex> digests are supported")
    prefix = _prefix(strip)
    dest = Path(dest)
    if os.path.lexists(dest):
        raise StorageError(f"cannot unpack layer {digest} into {dest}: it already exists")
    staging = _staging(dest)
    try:
        members = _read(blob, kind, digest, staging, prefix)
        _publish(staging, dest, digest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return members


def _prefix(strip: str) -> str:
    strip = strip.strip("/")
    if not strip:
        return ""
    if why := check_relpath(strip):
        raise ValueError(f"strip {strip!r} {why}")
    return strip + "/"


def _staging(dest: Path) -> Path:
    # Beside dest, so that the last step is a rename on one filesystem; hidden, and named after the process.
    path = dest.parent / f".{dest.name}.untar-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.mkdir(path, 0o755)
    except OSError as e:
        raise storage_error(e, "create", path) from None
    return path


def _drained(reader: HashingReader) -> str:
    """Read what is left of the blob (what the archive did not need) and return its digest."""
    while reader.read(CHUNK):
        pass
    return "sha256:" + reader.hasher.hexdigest()


def _read(blob: Path, kind: str, digest: str, staging: Path, prefix: str) -> list[Member]:
    where = f"layer {digest}"
    try:
        with open(blob, "rb", buffering=0) as fh:
            reader = HashingReader(fh, hashlib.sha256())  # the blob as read, on its way to the decompressor
            try:
                members = _extract(reader, kind, staging, prefix, where)
            except BadLayer as refused:
                # Whether the blob is the layer decides what the caller does next (fetch again, or give up).
                _check(_drained(reader), digest, where, f" (and {str(refused).removeprefix(where + ': ')})")
                raise
            _check(_drained(reader), digest, where)
    except OSError as e:
        raise storage_error(e, "read", blob) from None
    return members


def _check(actual: str, digest: str, where: str, besides: str = "") -> None:
    if actual != digest:
        raise LayerMismatch(f"{where}: digest mismatch: expected {digest}, got {actual}{besides}")


def _decompressed(reader: HashingReader, kind: str):
    """The tar stream, and the exceptions that mean its compression is corrupt."""
    if kind == "gzip":
        return gzip.GzipFile(fileobj=reader, mode="rb"), (gzip.BadGzipFile, zlib.error, EOFError)
    if kind == "zstd":
        import zstandard

        # A layer may hold several frames (pzstd, zstd:chunked): read them all.
        stream = zstandard.ZstdDecompressor().stream_reader(reader, read_size=CHUNK, read_across_frames=True,
                                                            closefd=False)
        return stream, (zstandard.ZstdError,)
    return reader, ()


def _extract(reader: HashingReader, kind: str, staging: Path, prefix: str, where: str) -> list[Member]:
    stream, corrupt = _decompressed(reader, kind)
    seen: dict[str, bool] = {}  # relative path -> is a directory
    members = []
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as tar:
            for info in tar:
                rel = _relative(info, prefix, where)
                if rel is None:
                    continue
                _claim(seen, rel, info, where)
                if info.isdir():
                    _mkdir(staging / rel)
                else:
                    _mkdir(staging / rel.rpartition("/")[0])
                    members.append(_write(tar, info, rel, staging, where))
            _check_trailer(tar, where)
    except (tarfile.TarError, EOFError, *corrupt) as e:
        raise BadLayer(f"{where}: the archive is truncated or corrupt ({type(e).__name__}: {e})") from None
    for rel in sorted(p for p, is_dir in seen.items() if is_dir):
        fsync_dir(staging / rel)
    fsync_dir(staging)
    return members


def _relative(info: tarfile.TarInfo, prefix: str, where: str) -> str | None:
    """Where ``info`` lands, relative to dest; None to skip it (outside ``strip``, or the root itself)."""
    name = info.name
    while name.startswith("./"):  # `tar -C dir .` names every member ./x
        name = name[2:]
    if prefix:
        if not name.startswith(prefix):
            return None
        name = name[len(prefix):]
    if info.isdir() and name in ("", "."):
        return None
    if not (info.isreg() or info.isdir()):
        what = _KINDS.get(info.type, f"of tar type {info.type!r}")
        if info.issym() or info.islnk():
            what += f" (to {info.linkname!r})"
        raise BadLayer(f"{where}: member {info.name!r} is {what}: only regular files and directories are unpacked")
    why = check_relpath(name)
    if why is None and not _utf8(name):
        why = "is not UTF-8"
    if why is None and name.rpartition("/")[2].startswith(".wh."):
        why = "is a whiteout (a deletion in a layered image), which one layer on its own cannot apply"
    if why:
        raise BadLayer(f"{where}: member {info.name!r} {why}")
    return name


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")  # tarfile keeps undecodable bytes as surrogates; a lock could not hold them
    except UnicodeEncodeError:
        return False
    return True


def _claim(seen: dict[str, bool], rel: str, info: tarfile.TarInfo, where: str) -> None:
    """Record ``rel``, refusing a file named twice, or a name that is a file in one member and a directory in
    another: the second would silently replace the first, or fail halfway."""
    is_dir = info.isdir()
    parts = rel.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        if seen.setdefault(parent, True) is False:
            raise BadLayer(f"{where}: member {info.name!r} is below {parent!r}, which is a file")
    old = seen.get(rel)
    if old is not None and not (old and is_dir):
        what = "appears twice" if old == is_dir else "is both a file and a directory"
        raise BadLayer(f"{where}: member {info.name!r} {what}")
    seen[rel] = is_dir


def _mkdir(path: Path) -> None:
    # Safe to create parents blindly: staging is new and only ever gets directories and regular files.
    try:
        os.makedirs(path, 0o755, exist_ok=True)
    except OSError as e:
        raise storage_error(e, "create", path) from None


def _write(tar: tarfile.TarFile, info: tarfile.TarInfo, rel: str, staging: Path, where: str) -> Member:
    path = staging / rel
    source = tar.extractfile(info)
    hasher, size = hashlib.sha256(), 0
    # 0644 whatever the tar says: model files are read, never executed, and a setuid or owner-only bit
    # from someone else's archive has no business in a target.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:  # two names one file on a case-insensitive filesystem
        raise BadLayer(f"{where}: member {info.name!r} collides with another member on this filesystem") from None
    except OSError as e:
        raise storage_error(e, "write", path) from None
    with open(fd, "wb") as out:
        while block := source.read(CHUNK):  # a corrupt archive raises here, for _extract to name
            hasher.update(block)
            size += len(block)
            try:
                out.write(block)
            except OSError as e:
                raise storage_error(e, "write", path) from None
        try:
            out.flush()
            os.fsync(out.fileno())
        except OSError as e:
            raise storage_error(e, "write", path) from None
    return Member(rel, size, hasher.hexdigest())


def _check_trailer(tar: tarfile.TarFile, where: str) -> None:
    """After the end-of-archive block only zeros may follow. tarfile also ends quietly at a header that does
    not parse; data after the end means members were lost that way, and a layer missing files is refused."""
    while block := tar.fileobj.read(CHUNK):  # to the end: gzip checks its CRC there
        if block.count(0) != len(block):
            raise BadLayer(f"{where}: data after the end of the archive (a corrupt member header?)")


def _publish(staging: Path, dest: Path, digest: str) -> None:
    if os.path.lexists(dest):
        raise StorageError(f"cannot unpack layer {digest} into {dest}: it appeared meanwhile")
    try:
        os.rename(staging, dest)
    except OSError as e:
        raise storage_error(e, "create", dest) from None
    fsync_dir(dest.parent)
