"""seeder/untar.py on real tar layers: built by Python's tarfile and by GNU tar, plain, gzip and zstd, and
hostile ones built member by member. A refused layer leaves neither ``dest`` nor a staging directory."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
import zstandard

from seeder.errors import INTEGRITY, STORAGE, StorageError
from seeder.untar import BadLayer, LayerMismatch, Member, compression, unpack
from tests.conftest import blob, file_sha256

LONG = "long/" + "n" * 60 + "/" + "a" * 120 + ".safetensors"  # past ustar's 100 characters: pax or GNU longname
MEDIA = {"": "application/vnd.cncf.model.weight.v1.tar",
         "gzip": "application/vnd.kitops.modelkit.model.v1.tar+gzip",
         "zstd": "application/vnd.cncf.model.weight.v1.tar+zstd"}


def digest_of(path: Path) -> str:
    return "sha256:" + file_sha256(path)


def umasked(mode: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def source_tree(root: Path) -> Path:
    src = root / "src"
    files = {"config.json": b'{"a": 1}\n', "empty.txt": b"", "nested/deep/dir/model.bin": blob(3 << 20, 1),
             LONG: blob(1000, 2)}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "emptydir").mkdir()
    with open(src / "sparse.bin", "wb") as fh:  # a hole, then data: GNU tar -S stores it sparse
        fh.truncate(1 << 20)
        fh.seek(1 << 20)
        fh.write(b"tail")
    return src


def expected(src: Path) -> dict[str, tuple[int, str]]:
    return {p.relative_to(src).as_posix(): (p.stat().st_size, file_sha256(p)) for p in src.rglob("*") if p.is_file()}


def zstd_file(plain: Path, out: Path) -> None:
    with open(plain, "rb") as fh, open(out, "wb") as dst:
        zstandard.ZstdCompressor(level=3).copy_stream(fh, dst)
    plain.unlink()


def python_tar(src: Path, out: Path, kind: str) -> None:
    target = out.with_suffix(".plain") if kind == "zstd" else out
    mode = {"": "w", "gzip": "w:gz", "zstd": "w"}[kind]
    with tarfile.open(target, mode, format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(src.rglob("*")):
            tar.add(path, arcname=path.relative_to(src).as_posix(), recursive=False)
    if kind == "zstd":
        zstd_file(target, out)


def gnu_tar(src: Path, out: Path, kind: str) -> None:
    # GNU format (longname 'L' records) for plain, POSIX pax for the compressed ones; ./ prefixes either way.
    fmt = "--format=gnu" if kind == "" else "--format=posix"
    flags = {"": [], "gzip": ["-z"], "zstd": ["--zstd"]}[kind]
    if kind == "zstd" and not shutil.which("zstd"):
        subprocess.run(["tar", "-S", fmt, "-cf", str(out.with_suffix(".plain")), "-C", str(src), "."], check=True)
        zstd_file(out.with_suffix(".plain"), out)
        return
    subprocess.run(["tar", "-S", fmt, *flags, "-cf", str(out), "-C", str(src), "."], check=True)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """dest's parent: after any unpack it holds dest or nothing, never a staging directory."""
    path = tmp_path / "out"
    path.mkdir()
    return path


@pytest.mark.parametrize("kind", ["", "gzip", "zstd"])
@pytest.mark.parametrize("build", [python_tar, gnu_tar], ids=["tarfile", "gnu-tar"])
def test_a_layer_unpacks_with_every_file_hashed_as_written(tmp_path, out, build, kind):
    src = source_tree(tmp_path)
    layer = tmp_path / "layer"
    build(src, layer, kind)
    dest = out / "model"
    members = unpack(layer, MEDIA[kind], digest_of(layer), dest)
    want = expected(src)
    assert {m.path: (m.size, m.sha256) for m in members} == want
    assert len(members) == len(want)
    for rel, (size, sha) in want.items():
        written = dest / rel
        assert (written.stat().st_size, file_sha256(written)) == (size, sha)
        assert stat.S_IMODE(written.stat().st_mode) == umasked(0o644)
    assert (dest / "emptydir").is_dir()
    assert os.listdir(out) == ["model"]


def test_tar_modes_are_not_kept(tmp_path, out):
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        info = tarfile.TarInfo("run.sh")
        info.mode, info.size = 0o4755, 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    unpack(layer, MEDIA[""], digest_of(layer), out / "model")
    assert stat.S_IMODE((out / "model" / "run.sh").stat().st_mode) == umasked(0o644)


def test_an_empty_layer_is_an_empty_directory(tmp_path, out):
    layer = tmp_path / "layer.tar"
    tarfile.open(layer, "w").close()
    assert unpack(layer, MEDIA[""], digest_of(layer), out / "model") == []
    assert os.listdir(out / "model") == []


def test_strip_keeps_what_is_under_it_and_skips_the_rest(tmp_path, out):
    layer = tmp_path / "layer.tar.gz"
    with tarfile.open(layer, "w:gz") as tar:
        add(tar, "./", tarfile.DIRTYPE)
        add(tar, "./etc/passwd-link", tarfile.SYMTYPE, link="/etc/passwd")  # a base image's: never written
        add(tar, "bin/sh", data=b"elf")
        add(tar, "./models", tarfile.DIRTYPE)
        add(tar, "./models/config.json", data=b"{}")
        add(tar, "models/sub/weights.bin", data=b"w" * 10)
    members = unpack(layer, "application/vnd.oci.image.layer.v1.tar+gzip", digest_of(layer), out / "m",
                     strip="models/")
    assert members == [Member("config.json", 2, hashlib.sha256(b"{}").hexdigest()),
                       Member("sub/weights.bin", 10, hashlib.sha256(b"w" * 10).hexdigest())]
    assert sorted(p.relative_to(out / "m").as_posix() for p in (out / "m").rglob("*")) == \
        ["config.json", "sub", "sub/weights.bin"]


def test_a_link_under_strip_is_still_refused(tmp_path, out):
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        add(tar, "models/ok.bin", data=b"ok")
        add(tar, "models/evil", tarfile.SYMTYPE, link="../../etc/shadow")
    with pytest.raises(BadLayer, match="'models/evil' is a symbolic link"):
        unpack(layer, MEDIA[""], digest_of(layer), out / "m", strip="models")
    assert os.listdir(out) == []


def add(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


HOSTILE = {
    "symlink": ([("evil", tarfile.SYMTYPE, "/etc/passwd")], "'evil' is a symbolic link (to '/etc/passwd')"),
    "hardlink": ([("ok.txt", tarfile.REGTYPE, ""), ("evil", tarfile.LNKTYPE, "ok.txt")], "'evil' is a hard link"),
    "absolute": ([("/etc/x", tarfile.REGTYPE, "")], "'/etc/x' is absolute"),
    "dotdot": ([("../x", tarfile.REGTYPE, "")], "'../x' has an empty, '.' or '..' segment"),
    "inner-dotdot": ([("a/../../x", tarfile.REGTYPE, "")], "'a/../../x' has an empty"),
    "backslash": ([("a\\..\\..\\x", tarfile.REGTYPE, "")], "contains a backslash"),
    "device": ([("dev", tarfile.CHRTYPE, "")], "'dev' is a character device"),
    "block-device": ([("blk", tarfile.BLKTYPE, "")], "'blk' is a block device"),
    "fifo": ([("pipe", tarfile.FIFOTYPE, "")], "'pipe' is a FIFO"),
    "duplicate": ([("dup.bin", tarfile.REGTYPE, ""), ("dup.bin", tarfile.REGTYPE, "")], "'dup.bin' appears twice"),
    "file-then-dir": ([("x", tarfile.REGTYPE, ""), ("x", tarfile.DIRTYPE, "")], "'x' is both a file and a dir"),
    "file-as-parent": ([("x", tarfile.REGTYPE, ""), ("x/y", tarfile.REGTYPE, "")], "'x/y' is below 'x', which is a file"),
    "whiteout": ([("models/.wh.old.bin", tarfile.REGTYPE, "")], "'models/.wh.old.bin' is a whiteout"),
    "state-dir": ([(".seeder/state.json", tarfile.REGTYPE, "")], "seeder's state directory"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_a_hostile_member_refuses_the_whole_layer(tmp_path, out, case):
    entries, message = HOSTILE[case]
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "first/good.bin", data=blob(200_000))  # staging already holds something when the layer fails
        for name, kind, link in entries:
            add(tar, name, kind, data=b"pwned" if kind == tarfile.REGTYPE else b"", link=link)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(BadLayer) as refused:
        unpack(layer, MEDIA[""], digest_of(layer), out / "model")
    assert message in str(refused.value)
    assert str(refused.value).startswith(f"layer {digest_of(layer)}: member ")
    assert refused.value.exit_code == INTEGRITY
    assert sorted(tmp_path.rglob("*")) == before  # no dest, no staging, nothing written beside or above


def test_a_wrong_digest_leaves_no_dest(tmp_path, out):
    src = source_tree(tmp_path)
    layer = tmp_path / "layer"
    python_tar(src, layer, "gzip")
    wrong = "sha256:" + "0" * 64
    with pytest.raises(LayerMismatch) as mismatch:
        unpack(layer, MEDIA["gzip"], wrong, out / "model")
    assert str(mismatch.value) == f"layer {wrong}: digest mismatch: expected {wrong}, got {digest_of(layer)}"
    assert mismatch.value.exit_code == INTEGRITY
    assert os.listdir(out) == []


@pytest.mark.parametrize("kind", ["", "gzip", "zstd"])
@pytest.mark.parametrize("published", [False, True], ids=["cut-on-the-way", "pushed-cut"])
def test_a_truncated_blob_is_refused_saying_why(tmp_path, out, kind, published):
    """Cut on its way here, the blob is not the layer (fetch it again); pushed cut, the digest is right and the
    archive is not (fetching again will not help)."""
    src = source_tree(tmp_path)
    layer = tmp_path / "layer"
    python_tar(src, layer, kind)
    digest = digest_of(layer)
    data = layer.read_bytes()
    layer.write_bytes(data[: len(data) // 2])
    if published:
        digest = digest_of(layer)
    error, message = (BadLayer, "^[^(]*: the archive is truncated or corrupt") if published else \
        (LayerMismatch, r"digest mismatch: .* \(and the archive is truncated or corrupt")
    with pytest.raises(error, match=message):
        unpack(layer, MEDIA[kind], digest, out / "model")
    assert os.listdir(out) == []


def test_a_corrupt_header_midway_is_not_a_quiet_end(tmp_path, out):
    """tarfile stops without a word at a header whose checksum is wrong; the layer would lose files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        add(tar, "a.bin", data=b"a" * 600)
        add(tar, "b.bin", data=b"b" * 600)
    data = bytearray(buf.getvalue())
    data[512 + 1024 + 148] ^= 0x01  # b.bin's header (after a.bin's header and two data blocks): its checksum
    layer = tmp_path / "layer.tar"
    layer.write_bytes(bytes(data))
    with pytest.raises(BadLayer, match="data after the end of the archive"):
        unpack(layer, MEDIA[""], digest_of(layer), out / "model")
    assert os.listdir(out) == []


def one_file_layer(tmp_path: Path) -> Path:
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        add(tar, "a.bin", data=b"a")
    return layer


def test_a_gzip_layer_that_is_not_gzip_is_corrupt(tmp_path, out):
    layer = one_file_layer(tmp_path)
    with pytest.raises(BadLayer, match="truncated or corrupt .*BadGzipFile"):
        unpack(layer, MEDIA["gzip"], digest_of(layer), out / "model")
    assert os.listdir(out) == []


def test_dest_must_not_exist(tmp_path, out):
    layer = one_file_layer(tmp_path)
    (out / "model").mkdir()
    (out / "model" / "mine").write_bytes(b"keep")
    with pytest.raises(StorageError, match="already exists") as exists:
        unpack(layer, MEDIA[""], digest_of(layer), out / "model")
    assert exists.value.exit_code == STORAGE
    assert os.listdir(out) == ["model"] and os.listdir(out / "model") == ["mine"]


def test_the_blob_is_read_once_as_a_stream(tmp_path, out):
    """A FIFO can be read once, front to back, and never seeks: the digest is checked on that one pass."""
    src = source_tree(tmp_path)
    layer = tmp_path / "layer"
    gnu_tar(src, layer, "zstd")
    digest = digest_of(layer)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as fh:
            fh.write(layer.read_bytes())

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    members = unpack(fifo, MEDIA["zstd"], digest, out / "model")
    writer.join(10)
    assert {m.path: (m.size, m.sha256) for m in members} == expected(src)


@pytest.mark.parametrize(("media_type", "kind"), [
    ("application/vnd.cncf.model.weight.v1.tar", ""),
    ("application/vnd.cncf.model.weight.config.v1.tar+gzip", "gzip"),
    ("application/vnd.cncf.model.dataset.v1.tar+zstd", "zstd"),
    ("application/vnd.cnai.model.doc.v1.tar", ""),
    ("application/vnd.kitops.modelkit.code.v1.tar+gzip", "gzip"),
    ("application/vnd.oci.image.layer.v1.tar", ""),
    ("application/vnd.oci.image.layer.v1.tar+zstd", "zstd"),
    ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "gzip"),
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", "gzip"),
    ("Application/VND.OCI.Image.Layer.v1.TAR+GZIP", "gzip"),
    ("application/vnd.cncf.model.weight.v1.raw", None),
    ("application/vnd.cncf.model.config.v1+json", None),
    ("application/vnd.kitops.modelkit.config.v1+json", None),
    ("application/octet-stream", None),
    ("application/x-tar", None),
])
def test_compression_by_media_type(media_type, kind):
    assert compression(media_type) == kind


def test_a_tar_with_an_unknown_encoding_is_not_taken_for_a_raw_file(tmp_path, out):
    with pytest.raises(BadLayer, match="unsupported tar encoding"):
        compression("application/vnd.oci.image.layer.v1.tar+encrypted")
    with pytest.raises(BadLayer, match="is not a tar layer"):
        unpack(tmp_path / "x", "application/vnd.cncf.model.weight.v1.raw", "sha256:" + "0" * 64, out / "m")
    assert os.listdir(out) == []


def test_gzip_written_by_the_gzip_module_too(tmp_path, out):
    """Several gzip members in one blob (pigz -i, concatenated streams) are one stream."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        add(tar, "a.bin", data=b"a" * 5000)
    raw = buf.getvalue()
    layer = tmp_path / "layer.tgz"
    layer.write_bytes(gzip.compress(raw[:2048]) + gzip.compress(raw[2048:]))
    assert unpack(layer, MEDIA["gzip"], digest_of(layer), out / "m")[0].sha256 == hashlib.sha256(b"a" * 5000).hexdigest()
