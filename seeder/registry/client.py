"""The distribution API (github.com/opencontainers/distribution-spec), the parts a model needs: manifests
by tag or digest, blob URLs for the download engine, and pushing blobs (HEAD, cross-repository mount,
monolithic or chunked upload resumed from the offset the registry reports) and manifests.

Every request goes through :mod:`seeder.fetch.transport` with a :class:`~.auth.RegistryAuth` that signs
the registry's own requests only (a blob redirect to S3 or a CDN gets no Authorization), and every
operation through the one retry policy.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import BinaryIO
from urllib.parse import quote, urlencode, urljoin, urlsplit

from .. import log
from ..errors import IntegrityError, RemoteError, TransientError
from ..fetch.retry import is_transient, retrying, transient
from ..fetch.transport import Client, Response
from ..settings import Network, Parts, is_local
from ..spec.kinds.oci import Reference
from . import modelpack
from .auth import DOCKER_HUB, RegistryAuth

MANIFEST_MAX = 4 << 20
"""distribution refuses to serve a larger manifest; a bigger answer is not one."""


@dataclass(frozen=True)
class Manifest:
    data: bytes
    media_type: str
    digest: str

    def json(self) -> dict:
        return json.loads(self.data)


class Registry:
    """One registry host. ``push`` asks tokens that allow pushing."""

    def __init__(self, host: str, net: Network, parts: Parts | None = None, push: bool = False):
        hostname = urlsplit(f"//{host}").hostname or host
        plain = is_local(hostname) or host.lower() in {h.lower() for h in net.insecure_registries}
        self.host = host
        api = "registry-1.docker.io" if host in DOCKER_HUB else host  # Docker Hub's API is not at docker.io
        self.base = f"{'http' if plain else 'https'}://{api}/v2/"
        self.auth = RegistryAuth(host, self.base, net, push=push)
        self.net = replace(net, token=None, auth=self.auth, allow_http=net.allow_http or plain)
        self.client = Client(self.net, parts)

    # -- reading --------------------------------------------------------------------------------------------

    def blob_url(self, repository: str, digest: str) -> str:
        return f"{self.base}{repository}/blobs/{digest}"

    def manifest(self, ref: Reference, model: str) -> Manifest:
        """The manifest ``ref`` names, its digest checked when the reference pins one."""
        url = f"{self.base}{ref.repository}/manifests/{ref.ref}"
        with self._call("GET", url, model, f"{ref}", headers={"Accept": modelpack.ACCEPT}) as resp:
            if resp.status_code == 404:
                raise RemoteError(f"{model}: {ref}: no such repository or tag in {self.host}")
            self._check(resp, ref.repository, f"{model}: {ref}")
            data = _read(resp, MANIFEST_MAX, f"{model}: {ref}: manifest")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if ref.digest and digest != ref.digest:
            raise RemoteError(f"{model}: {ref}: the registry sent a manifest whose digest is {digest}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            media_type = json.loads(data).get("mediaType") or media_type
        except (ValueError, AttributeError):
            raise RemoteError(f"{model}: {ref}: the manifest is not JSON") from None
        return Manifest(data, media_type, digest)

    # -- pushing --------------------------------------------------------------------------------------------

    def has_blob(self, repository: str, digest: str, model: str) -> bool:
        with self._call("HEAD", self.blob_url(repository, digest), model, digest) as resp:
            if resp.status_code == 404:
                return False
            self._check(resp, repository, f"{model}: blob {digest}")
            return True

    def mount(self, repository: str, digest: str, source: str, model: str) -> bool:
        """Ask for a blob of another repository of this registry: True when it is now in ``repository``."""
        query = urlencode({"mount": digest, "from": source})
        with self._call("POST", f"{self.base}{repository}/blobs/uploads/?{query}", model, digest) as resp:
            if resp.status_code in (401, 403):
                # No read of the other repository for these credentials: the upload that is left may still be.
                return False
            self._check(resp, repository, f"{model}: mount {digest}")
            return resp.status_code == 201

    def upload(self, repository: str, digest: str, size: int, opener: Callable[[int], BinaryIO], model: str,
               chunk: int, sent: Callable[[int], None] = lambda n: None) -> None:
        """Upload a blob: one PUT when it fits in ``chunk`` bytes, else PATCHes of ``chunk`` bytes. After a
        dropped connection the upload goes on from the offset the registry reports, not from zero.
        ``opener(offset)`` opens the blob's bytes at an offset; ``sent`` is told each chunk's size."""
        try:
            self._upload(repository, digest, size, opener, model, chunk, sent)
        except IntegrityError:
            # A chunk cut short may have left part of itself in the session behind our back (the transport sends
            # a request cut on a kept-alive connection once more): once from nothing before the bytes are blamed.
            log.info("upload digest disputed; sending it afresh", model=model, digest=digest)
            self._upload(repository, digest, size, opener, model, chunk, sent)

    def _upload(self, repository: str, digest: str, size: int, opener: Callable[[int], BinaryIO], model: str,
                chunk: int, sent: Callable[[int], None]) -> None:
        where = f"{model}: blob {digest}"
        location, offset = None, 0
        for attempt in self._attempts("upload", model, digest):
            with attempt:
                if location is None:
                    location, offset = self._start(repository, where, model), 0
                else:  # a chunked upload broke off, perhaps mid-chunk: the registry knows what it kept
                    location, offset = self._resume_point(location, repository, where, model)
                if size <= chunk:
                    start, location = location, None  # a failed PUT ends its upload session
                    return self._put(start, digest, _window(opener, 0, size), size, repository, where)
                while offset < size:
                    n = min(chunk, size - offset)
                    location = self._patch(location, offset, n, _window(opener, offset, n), repository, where)
                    offset += n
                    sent(n)
                return self._put(location, digest, b"", 0, repository, where)

    def put_manifest(self, repository: str, tag: str, manifest: bytes, media_type: str, model: str) -> str:
        url = f"{self.base}{repository}/manifests/{quote(tag)}"
        with self._call("PUT", url, model, tag, headers={"Content-Type": media_type}, body=manifest) as resp:
            if resp.status_code not in (401, 403) and resp.status_code >= 400:
                # A registry's limits show here (size, layer count): say what was asked of it.
                layers = len(json.loads(manifest).get("layers") or ())
                what = f"{model}: {self.host} refused the manifest ({layers} layers, {len(manifest)} bytes)"
                if resp.status_code == 413:
                    raise RemoteError(f"{what}: too large for this registry (HTTP 413); fewer files per model "
                                      "would fit")
                raise RemoteError(f"{what}: HTTP {resp.status_code}{_errors(resp)}")
            self._check(resp, repository, f"{model}: manifest {tag}")
        return "sha256:" + hashlib.sha256(manifest).hexdigest()

    def _start(self, repository: str, where: str, model: str) -> str:
        url = f"{self.base}{repository}/blobs/uploads/"
        with self._call("POST", url, model, where) as resp:
            self._check(resp, repository, where)
            return self._location(resp, url, where)

    def _put(self, location: str, digest: str, body, length: int, repository: str, where: str) -> None:
        url = location + ("&" if urlsplit(location).query else "?") + urlencode({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        with self.client.request("PUT", url, headers=headers, body=body) as resp:
            self._raise_transient(resp)
            if resp.status_code == 400:
                detail = _errors(resp)
                if "DIGEST_INVALID" in detail:
                    raise IntegrityError(f"{where}: the bytes sent are not {digest} by the registry's count; "
                                         "the file changed on disk or on its way")
                raise RemoteError(f"{where}: HTTP 400 from {self.host}{detail}")
            self._check(resp, repository, where)

    def _patch(self, location: str, offset: int, n: int, body, repository: str, where: str) -> str:
        headers = {"Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{offset + n - 1}",
                   "Content-Length": str(n)}
        with self.client.request("PATCH", location, headers=headers, body=body) as resp:
            self._raise_transient(resp)
            if resp.status_code == 404:
                # The session ended under us: distribution ends one whose last chunk arrived cut short (and our
                # transport sends a request cut on a kept-alive connection once more). Start over.
                raise TransientError(f"{where}: the registry dropped the upload session")
            self._check(resp, repository, where)
            return self._location(resp, location, where)

    def _resume_point(self, location: str, repository: str, where: str, model: str) -> tuple[str, int]:
        """Where an interrupted chunked upload stands: the registry's ``Range: 0-<last byte>``."""
        with self.client.request("GET", location) as resp:
            self._raise_transient(resp)
            if resp.status_code == 404:  # the upload session is gone: start it again
                return self._start(repository, where, model), 0
            self._check(resp, repository, where)
            kept = re.fullmatch(r"0-(\d+)", resp.headers.get("Range", "").strip())
            # distribution says 0-0 of an empty upload as well as of one byte; a session only ever holds whole
            # chunks (a chunk cut short ends it: 404 above), so 0-0 is nothing.
            end = int(kept[1]) if kept else 0
            return self._location(resp, location, where), end + 1 if end else 0

    def _location(self, resp: Response, url: str, where: str) -> str:
        location = resp.headers.get("Location")
        if not location:
            raise RemoteError(f"{where}: {self.host} answered an upload without a Location")
        return urljoin(url, location)

    # -- every request --------------------------------------------------------------------------------------

    def _call(self, method: str, url: str, model: str, what: str, **kwargs) -> Response:
        """One request under the retry policy: transient answers are retried, the rest returned."""
        for attempt in self._attempts("registry", model, what):
            with attempt:
                resp = self.client.request(method, url, **kwargs)
                try:
                    self._raise_transient(resp)
                except TransientError:
                    resp.close()
                    raise
                return resp
        raise AssertionError("unreachable")

    def _attempts(self, what: str, model: str, detail: str):
        """The retry policy's attempts, the last failure a :class:`RemoteError` (a transient one only means
        "try again", which is over by then)."""
        try:
            yield from retrying(self.net, what, model, detail)
        except TransientError as e:
            hint = (" (a plain-http registry? list it in SEEDER_INSECURE_REGISTRIES)"
                    if "WRONG_VERSION_NUMBER" in str(e) else "")
            raise RemoteError(f"{model}: {detail}: {e}{hint} (gave up after {self.net.attempts} attempts)") from None

    def _raise_transient(self, resp: Response) -> None:
        if is_transient(resp.status_code):
            raise transient(resp.status_code, resp.headers, f"HTTP {resp.status_code} from {self.host}", self.net,
                            resp.url)

    def _check(self, resp: Response, repository: str, where: str) -> None:
        status = resp.status_code
        if status < 400:
            return
        if status in (401, 403):
            raise RemoteError(self.auth.refused(repository))
        detail = _errors(resp)
        if status == 404:
            raise RemoteError(f"{where}: not found in {self.host}/{repository}{detail}")
        if status == 413:
            raise RemoteError(f"{where}: {self.host} refused it as too large (HTTP 413){detail}")
        raise RemoteError(f"{where}: HTTP {status} from {self.host}{detail}")


def _errors(resp: Response) -> str:
    """The registry's own error codes (``{"errors": [{"code": …, "message": …}]}``), briefly."""
    try:
        found = json.loads(_read(resp, 1 << 16, ""))["errors"]
        return ": " + "; ".join(f"{e.get('code')} {e.get('message', '')}".strip() for e in found[:3])
    except (ValueError, KeyError, TypeError, AttributeError, RemoteError):
        return ""


def _read(resp: Response, limit: int, where: str) -> bytes:
    data = bytearray()
    for chunk in resp.chunks(1 << 16):
        data += chunk
        if len(data) > limit:
            raise RemoteError(f"{where}: larger than {limit} bytes")
    return bytes(data)


def _window(opener: Callable[[int], BinaryIO], offset: int, n: int) -> Callable[[], BinaryIO]:
    """A body of ``n`` bytes from ``offset``, opened afresh on each send."""
    def open_() -> BinaryIO:
        return _Limited(opener(offset), n)
    return open_


class _Limited:
    """A file object that ends after ``n`` bytes: http.client sends a file body until read() is empty."""

    def __init__(self, f: BinaryIO, n: int):
        self._f, self._left = f, n

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._f.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._f.close()

