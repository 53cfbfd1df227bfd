"""``seeder export-image``: Docker images in one compressed archive with a sha256 sidecar, for air-gapped hosts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .. import log
from ..errors import OK, RemoteError, UsageError
from ..store.fs import storage_error


def run(args, cfg, net) -> int:
    digest = export_images(args.images, Path(args.output))
    log.info("images exported", output=args.output, images=args.images, sha256=digest,
             load=load_command(Path(args.output)))
    return OK


def export_images(names: list[str], output: Path) -> str:
    """Stream ``docker save`` of ``names`` into ``output`` (.zst or .gz compresses); returns the sha256."""
    try:
        import docker
        import requests
        from docker.errors import DockerException, ImageNotFound
    except ImportError:
        raise UsageError("export-image needs the Docker SDK: pip install 'model-seeder[docker]'") from None
    try:
        client = docker.from_env()
        for name in names:
            client.images.get(name)
    except ImageNotFound as e:
        raise UsageError(f"no such image: {e.explanation}") from None
    except DockerException as e:
        raise RemoteError(f"cannot reach the Docker engine: {e}") from None

    api = client.api
    # The SDK saves one image per call; the engine's /images/get takes several names into one tar.
    try:
        response = api._get(api._url("/images/get"), params={"names": names}, stream=True)
        api._raise_for_status(response)
    except DockerException as e:
        raise RemoteError(f"docker could not save {', '.join(names)}: {e}") from None
    tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            raw = _HashingWriter(fh)
            writer = _compressor(output, raw)
            for chunk in response.iter_content(1 << 20):
                writer.write(chunk)
            if writer is not raw:
                writer.close()
            fh.flush()
            os.fsync(fh.fileno())
        digest = raw.digest
        os.replace(tmp, output)
        sidecar = output.with_name(output.name + ".sha256")
        sidecar.write_text(f"{digest.hexdigest()}  {output.name}\n")
    except requests.exceptions.RequestException as e:  # an OSError too: test it first
        tmp.unlink(missing_ok=True)
        raise RemoteError(f"the Docker engine stopped sending the images: {e}") from None
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise storage_error(e, "write", output) from None
    return digest.hexdigest()


def load_command(output: Path) -> str:
    """What to run on the air-gapped host, from the archive's directory."""
    if output.name.endswith(".zst"):
        load = f"zstd -dc {output.name} | docker load"
    else:
        load = f"docker load -i {output.name}"
    return f"sha256sum -c {output.name}.sha256 && {load}"


class _HashingWriter:
    """The sidecar's sha256 is of the bytes written, computed as they go out."""

    def __init__(self, fh):
        self.fh, self.digest = fh, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def _compressor(output: Path, raw):
    if output.name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(raw, closefd=False)
    if output.name.endswith(".gz"):
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=3)
    return raw
