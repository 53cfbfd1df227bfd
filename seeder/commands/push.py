"""``seeder push REGISTRY/NAMESPACE``: each model of a seeded, verified target as one CNCF ModelPack v1
artifact at ``REGISTRY/NAMESPACE/<name>:<tag>``, so that a cluster without the hub seeds from its own
registry (``--write-manifest`` writes the models.toml and lock that do so).

A layer is one file's bytes as they are, so its digest is the file's sha256, which the lock already pins
(a file the hub knows only by its git blob id is hashed first): nothing is re-packed, and a blob the
registry has (HEAD) or can mount from a repository pushed earlier in the run is not sent. The artifact holds
no time of push, so the same files make the same manifest digest and pushing again uploads nothing.
"""

from __future__ import annotations

import threading
import tomllib
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from .. import failpoints, log
from ..errors import OK, IntegrityError, RemoteError, UsageError
from ..fetch.transport import safe
from ..fmt import human_bytes
from ..integrity import ContentMismatch, hash_file
from ..registry import modelpack
from ..registry.client import MANIFEST_MAX, Registry
from ..spec import manifest as manifests
from ..spec.kinds.oci import COMPONENT, TAG, parse_reference
from ..spec.lock import Lock, LockedFile, LockedModel, lock_path_for
from ..store import Target
from ..store.fs import storage_error, write_atomic
from ..store.state import State
from ..store.verify import verify
from . import checked_lock, target_of



@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    label: str
    """How messages name it: the file's path in the model, or ``config``."""
    path: Path | None = None
    data: bytes = b""

    def open_at(self, offset: int) -> BinaryIO:
        fh = open(self.path, "rb") if self.path is not None else BytesIO(self.data)
        fh.seek(offset)
        return fh


@dataclass(frozen=True)
class Artifact:
    model: LockedModel
    repository: str
    files: tuple[LockedFile, ...]
    """The model's files, each with its sha256."""
    blobs: tuple[Blob, ...]
    """What the manifest references, one per digest: the files', then the config."""
    manifest: bytes


def run(args, cfg, net) -> int:
    host, namespace = destination(args.destination)
    if not TAG.fullmatch(args.tag):
        raise UsageError(f"--tag {args.tag!r} is not a tag (letters, digits, '_', '.', '-'; at most 128, "
                         "not starting with '.' or '-')")
    output = _output(args.write_manifest, cfg.manifest)
    target = target_of(cfg)
    state = target.read_state()
    lock = checked_lock(cfg, target, state)
    repositories = {m.name: repository_of(namespace, m.name) for m in lock.models}
    ready(target, lock, state)
    artifacts = [prepare(target, m, repositories[m.name], cfg.endpoint) for m in lock.models]
    pusher = Pusher(Registry(host, net, push=True), cfg.push_chunk, cfg.jobs)
    pushed = []
    for art in artifacts:
        digest = pusher.push(art, args.tag)
        reference = f"{host}/{art.repository}:{args.tag}@{digest}"
        print(f"{art.model.name} {reference}", flush=True)
        pushed.append((art, reference, digest))
    if output is not None:
        write_manifest(output, pushed)
        log.info("wrote manifest", manifest=str(output), lock=str(lock_path_for(output)), models=len(pushed))
    log.info("push", registry=host, models=len(pushed), uploaded=pusher.sent, blobs_uploaded=pusher.uploads,
             blobs_mounted=pusher.mounted, blobs_present=pusher.present)
    return OK


def destination(value: str) -> tuple[str, str]:
    """``REGISTRY/NAMESPACE`` (or a bare ``REGISTRY``) -> (host, namespace)."""
    namespace = value.partition("/")[2]
    ref = parse_reference(f"{value}/x")
    if ref is None or ref.tag or ref.digest:
        raise UsageError(f"{value!r} is not REGISTRY/NAMESPACE like 'registry.example.com/team' (the registry "
                         "host is required; no tag or digest: each model is pushed as <name>:--tag)")
    return ref.host, namespace


def repository_of(namespace: str, name: str) -> str:
    if not COMPONENT.fullmatch(name):
        raise UsageError(f"model {name!r}: not a repository name in a registry (lowercase letters, digits and "
                         "'.', '_', '-' between them); rename the model to push it")
    return f"{namespace}/{name}" if namespace else name


def ready(target: Target, lock: Lock, state: State) -> None:
    """Only a completely seeded target is pushed: every model installed as the lock pins it, sizes intact.
    A directory seeder did not write (verify would hold it to the lock alone) is not one."""
    if not target.managed():
        raise IntegrityError(f"{target.root} was not seeded by seeder (no .seeder/ in it); run seeder first")
    if problems := verify(target, lock, fast=True, state=state):
        raise IntegrityError(f"{target.root} is not completely seeded ({problems[0]}"
                             f"{f', and {len(problems) - 1} more' if len(problems) > 1 else ''}); run seeder first")


def prepare(target: Target, model: LockedModel, repository: str, endpoint: str) -> Artifact:
    """The model's artifact, built before anything is sent: its files' digests, layers, config, manifest."""
    files = tuple(sorted((_with_sha256(target, model, f) for f in model.files), key=lambda f: f.path))
    layers = [modelpack.layer(f.path, f"sha256:{f.sha256}", f.size) for f in files]
    config = modelpack.config(descriptor(model, endpoint), [f.path for f in files], layers)
    manifest = modelpack.manifest(config, layers)
    if len(manifest) > MANIFEST_MAX:
        raise RemoteError(f"{model.name}: its manifest would be {human_bytes(len(manifest))} ({len(layers)} layers), "
                          f"over the {human_bytes(MANIFEST_MAX)} registries serve; fewer files per model would fit")
    blobs: dict[str, Blob] = {}
    for f in files:  # two files of the same bytes are two layers, one blob
        digest = f"sha256:{f.sha256}"
        blobs.setdefault(digest, Blob(digest, f.size, f.path, target.path_of(model, f.path)))
    blobs[modelpack.digest_of(config)] = Blob(modelpack.digest_of(config), len(config), "config", data=config)
    return Artifact(model, repository, files, tuple(blobs.values()), manifest)


def descriptor(model: LockedModel, endpoint: str) -> dict:
    """Where the model came from, in the config's terms (its schema allows nothing else)."""
    found: dict[str, str] = {"name": model.name}
    if model.kind == "repo":
        found["sourceURL"] = f"{endpoint.rstrip('/')}/{model.repo}"
    elif model.urls:
        found["sourceURL"] = safe(model.urls[0])  # a signed URL's query is a credential
    if model.commit:
        found["revision"] = model.commit
    return found


def _with_sha256(target: Target, model: LockedModel, file: LockedFile) -> LockedFile:
    if file.sha256:
        return file
    path = target.path_of(model, file.path)
    try:
        sha256 = hash_file(path, file).check()  # checks the git blob id on the way
    except ContentMismatch as e:
        raise IntegrityError(f"{model.name}/{file.path} does not match its lock ({e}); run seeder") from None
    except OSError as e:
        raise storage_error(e, "read", path) from None
    return LockedFile(path=file.path, size=file.size, sha256=sha256)


class Pusher:
    """Blobs into a registry, ``jobs`` at a time; remembers which repository of it holds what, to mount."""

    def __init__(self, reg: Registry, chunk: int, jobs: int):
        self.reg, self.chunk, self.jobs = reg, chunk, jobs
        self.held: dict[str, str] = {}  # digest -> a repository this run saw it in
        self.mounting = True
        self.sent = self.uploads = self.mounted = self.present = 0
        self._count = threading.Lock()

    def push(self, art: Artifact, tag: str) -> str:
        before = (self.sent, self.uploads, self.mounted, self.present)
        progress = log.Progress(sum(b.size for b in art.blobs))
        pool = ThreadPoolExecutor(max_workers=self.jobs)
        try:
            done, _ = wait([pool.submit(self._blob, art, b, progress) for b in art.blobs], return_when=FIRST_EXCEPTION)
        finally:
            # On a failure or Ctrl-C, at once: a blob cut short is an upload session the registry drops.
            pool.shutdown(wait=False, cancel_futures=True)
            progress.close()
        if failed := next((f.exception() for f in done if f.exception() is not None), None):
            raise failed
        for blob in art.blobs:
            self.held[blob.digest] = art.repository
        digest = self.reg.put_manifest(art.repository, tag, art.manifest, modelpack.OCI_MANIFEST, art.model.name)
        sent, uploads, mounted, present = (now - then for now, then in zip(
            (self.sent, self.uploads, self.mounted, self.present), before))
        log.info("pushed", model=art.model.name, repository=f"{self.reg.host}/{art.repository}", tag=tag,
                 digest=digest, layers=len(art.files), uploaded=sent, blobs_uploaded=uploads, blobs_mounted=mounted,
                 blobs_present=present)
        return digest

    def _blob(self, art: Artifact, blob: Blob, progress: log.Progress) -> None:
        name, repo = art.model.name, art.repository
        if self.reg.has_blob(repo, blob.digest, name):
            self._counted(present=1)
            progress.carry(blob.size)
            return
        source = self.held.get(blob.digest)
        if source is not None and self.mounting:
            if self.reg.mount(repo, blob.digest, source, name):
                self._counted(mounted=1)
                progress.carry(blob.size)
                return
            self.mounting = False  # refused once, refused again: each try costs a round trip (or a token)
        self._upload(art, blob, progress.file(name, blob.label, blob.size))

    def _upload(self, art: Artifact, blob: Blob, progress: log.FileProgress) -> None:
        name = art.model.name

        def sent(n: int) -> None:
            self._counted(sent=n)
            progress.update(n)
            failpoints.hit("push-chunk")

        try:
            self.reg.upload(art.repository, blob.digest, blob.size, blob.open_at, name, self.chunk, sent)
        except IntegrityError:
            raise IntegrityError(f"{name}/{blob.label}: the registry found the bytes sent are not {blob.digest}, "
                                 "its sha256 when seeded: the file changed on disk (seeder verify tells)") from None
        except OSError as e:
            raise storage_error(e, "read", blob.path or blob.label) from None
        whole = blob.size if blob.size <= self.chunk else 0  # one PUT, which tells no chunk
        progress.update(whole)
        self._counted(sent=whole, uploads=1)
        log.info("uploaded", model=name, file=blob.label, digest=blob.digest, bytes=blob.size)
        failpoints.hit("push-blob")

    def _counted(self, sent: int = 0, uploads: int = 0, mounted: int = 0, present: int = 0) -> None:
        with self._count:
            self.sent += sent
            self.uploads += uploads
            self.mounted += mounted
            self.present += present


def _output(value: str | None, manifest: str) -> Path | None:
    """Where --write-manifest goes, refused before anything is pushed if it cannot be written or would
    overwrite the manifest the target was seeded from."""
    if value is None:
        return None
    path = Path(value)
    if not path.parent.is_dir():
        raise UsageError(f"--write-manifest {value}: no directory {path.parent}")
    if path.resolve() == Path(manifest).resolve() or lock_path_for(path).resolve() == Path(manifest).resolve():
        raise UsageError(f"--write-manifest {value} would overwrite the manifest {manifest}: write it elsewhere")
    return path


def write_manifest(path: Path, pushed: list[tuple[Artifact, str, str]]) -> None:
    """A models.toml whose models are the pushed artifacts, pinned by digest, and its lock beside it as
    ``seeder lock`` would write it, so that ``seeder --locked`` seeds from the registry alone."""
    text = ("# Written by seeder push: each model is an artifact in an OCI registry, pinned by its digest.\n"
            "# Seed with `seeder --locked`: the lock beside this file needs no other source.\n")
    text += "".join(f'\n[[models]]\nname = "{art.model.name}"\noci = "{reference}"\n' for art, reference, _ in pushed)
    specs = manifests.parse(tomllib.loads(text), path)
    lock = Lock(models=tuple(
        LockedModel(name=spec.name, fingerprint=spec.fingerprint, kind="oci", repo=reference, commit=digest,
                    files=tuple(LockedFile(path=f.path, size=f.size, sha256=f.sha256) for f in art.files))
        for spec, (art, reference, digest) in zip(specs.models, pushed)))
    write_atomic(lock_path_for(path), lock.dumps())  # a lock entry the manifest lacks is harmless; the reverse not
    write_atomic(path, text)
