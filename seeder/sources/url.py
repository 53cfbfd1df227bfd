"""Plain http(s) URLs: one file each, pinned by the manifest's sha256 or the server's, with mirrors.

Resolving needs at most one HEAD request (for the size, and the hub's ``X-Linked-Etag`` sha256 when
the URL is a hub file). A huggingface.co URL follows ``HF_ENDPOINT``, so one variable moves every
hub download to a mirror.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit, urlunsplit

from .. import log
from ..errors import ManifestError, RemoteError, TransientError, UsageError
from ..fetch.retry import classify, retrying
from ..fetch.transport import MAX_REDIRECTS, Client
from ..settings import Network
from ..spec.lock import LockedFile, LockedModel
from ..spec.manifest import Manifest, ModelSpec

_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_FILE_SIZE = 1 << 44  # 16 TiB: anything larger is a broken server, not a model
HF_HOSTS = {"huggingface.co", "hf.co"}


def file_urls(model: LockedModel, file: LockedFile, net: Network) -> list[str]:
    return [follow_endpoint(model.urls[0], net), *model.urls[1:]]


def follow_endpoint(url: str, net: Network) -> str:
    """Point a huggingface.co URL at HF_ENDPOINT, so one variable moves every hub download to a mirror."""
    split = urlsplit(url)
    if split.hostname not in HF_HOSTS:
        return url
    ep = urlsplit(net.endpoint)
    return urlunsplit((ep.scheme, ep.netloc, ep.path.rstrip("/") + split.path, split.query, ""))


def resolve(spec: ModelSpec, manifest: Manifest, client: Client) -> LockedModel:
    src = spec.source
    urls = (src.url, *src.mirrors)
    size, sha256 = src.size, src.sha256
    if size is None or sha256 is None:
        head_size, head_sha = _head_any(spec.name, [follow_endpoint(src.url, client.net), *src.mirrors], client)
        size = head_size if size is None else size
        sha256 = sha256 or head_sha
    if sha256 is None:
        raise ManifestError(manifest.path, "required: the server publishes no sha256 for this URL", spec.name, "sha256")
    if size is None:
        raise RemoteError(f"{spec.name}: the server did not say how large {src.url} is; set 'size' in the manifest")
    return LockedModel(name=spec.name, fingerprint=spec.fingerprint, kind="url",
                       files=(LockedFile(path=src.filename, size=size, sha256=sha256),), urls=urls)


def _head_any(model: str, urls: list[str], client: Client) -> tuple[int | None, str | None]:
    for i, url in enumerate(urls):
        try:
            return _head(model, url, client)
        except RemoteError as e:
            if i == len(urls) - 1:
                raise
            log.warning("source failed, trying next", model=model, error=str(e))
    raise AssertionError("unreachable")


def _head(model: str, url: str, client: Client) -> tuple[int | None, str | None]:
    """Size and, for hub-hosted LFS files, sha256 from a HEAD; the hub puts both on its redirect."""
    try:
        for attempt in retrying(client.net, "resolve", model):
            with attempt:
                resp = client.request("HEAD", url, allow_redirects=False)
                for _ in range(MAX_REDIRECTS + 1):
                    if not resp.is_redirect or "X-Linked-Size" in resp.headers:
                        break
                    resp = client.request("HEAD", urljoin(resp.url, resp.headers["Location"]), allow_redirects=False)
                else:
                    raise RemoteError(f"too many redirects resolving {url}")
                classify(resp, url, client.net)
    except TransientError as e:
        raise RemoteError(f"{model}: HEAD {url} failed after {client.net.attempts} attempts: {e}") from None
    except (RemoteError, UsageError) as e:  # UsageError: redirected to plain http
        raise RemoteError(f"{model}: {e}") from None
    raw_size = resp.headers.get("X-Linked-Size") or resp.headers.get("Content-Length")
    size = int(raw_size) if raw_size and raw_size.isdigit() and int(raw_size) <= MAX_FILE_SIZE else None
    etag = (resp.headers.get("X-Linked-Etag") or resp.headers.get("ETag") or "").strip('W/"').lower()
    return size, etag if _HEX64.fullmatch(etag) else None
