"""Resolve manifest models into lock entries: revisions to commits, globs to files with digests.

Repos are resolved through huggingface_hub's API client (it knows the hub's
endpoints, paging and auth conventions); URLs need at most one HEAD request.
"""

from __future__ import annotations

import functools
import os
import re
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from . import log
from .config import Network
from .errors import ManifestError, RemoteError, TransientError, UsageError, tls_failure
from .lock import LockedFile, LockedModel
from .manifest import Manifest, ModelSpec, RepoSource, UrlSource
from .paths import check_relpath
from .transfer import Client, classify, is_transient
from .transport import MAX_REDIRECTS, tls_context

_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_FILE_SIZE = 1 << 44  # 16 TiB: anything larger is a broken server, not a model
HF_HOSTS = {"huggingface.co", "hf.co"}


def resolve(manifest: Manifest, names: list[str], net: Network, client: Client) -> dict[str, LockedModel]:
    resolved = {}
    for spec in manifest.models:
        if spec.name in names:
            log.info("resolving", model=spec.name)
            if isinstance(spec.source, RepoSource):
                resolved[spec.name] = _resolve_repo(spec, spec.source, manifest, net, client)
            else:
                resolved[spec.name] = _resolve_url(spec, spec.source, manifest, net, client)
    return resolved


def file_urls(model: LockedModel, file: LockedFile, net: Network) -> list[str]:
    """Where a locked file's bytes can be fetched, in the order to try."""
    if model.kind == "repo":
        return [f"{net.endpoint}/{model.repo}/resolve/{model.commit}/{quote(file.path)}"]
    return [follow_endpoint(model.urls[0], net), *model.urls[1:]]


def follow_endpoint(url: str, net: Network) -> str:
    """Point a huggingface.co URL at HF_ENDPOINT, so one variable moves every hub download to a mirror."""
    parts = urlsplit(url)
    if parts.hostname not in HF_HOSTS:
        return url
    ep = urlsplit(net.endpoint)
    return urlunsplit((ep.scheme, ep.netloc, ep.path.rstrip("/") + parts.path, parts.query, ""))


@functools.cache
def _hub_api(net: Network):
    """One API client per run: setting the client factory drops huggingface_hub's pooled connections."""
    # Read at import: keeps the client from calling home (an agent-detection fetch) from an init container.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import httpx2
    from huggingface_hub import HfApi, set_client_factory

    timeout = httpx2.Timeout(net.read_timeout, connect=net.connect_timeout)
    verify = tls_context(net.ca_bundle)  # the downloads' own: one trust store, one error for a bad bundle
    set_client_factory(lambda: httpx2.Client(follow_redirects=True, timeout=timeout, verify=verify))
    return HfApi(endpoint=net.endpoint, token=net.token or False, library_name="seeder")


def _resolve_repo(spec: ModelSpec, src: RepoSource, manifest: Manifest, net: Network, client: Client) -> LockedModel:
    import httpx2
    from huggingface_hub import errors as hf
    from huggingface_hub.utils import filter_repo_objects

    api = _hub_api(net)
    where = f"{src.repo}@{src.revision}"

    def call(fn):
        for attempt in client.retrying("resolve", spec.name):
            with attempt:
                try:
                    return fn()
                except (hf.RepositoryNotFoundError, hf.RevisionNotFoundError) as e:
                    what = "revision" if isinstance(e, hf.RevisionNotFoundError) else "repo"
                    raise RemoteError(f"{spec.name}: {what} not found: {where} (a private repo needs HF_TOKEN)") from None
                except hf.HfHubHTTPError as e:
                    status = e.response.status_code if e.response is not None else None
                    if status in (401, 403) or isinstance(e, hf.GatedRepoError):
                        raise RemoteError(f"{spec.name}: {where} is gated or private: set HF_TOKEN") from None
                    if is_transient(status or 0):
                        raise TransientError(f"hub answered HTTP {status}") from None
                    raise RemoteError(f"{spec.name}: hub answered HTTP {status} for {where}") from None
                except (httpx2.TransportError, httpx2.TimeoutException) as e:
                    if "CERTIFICATE_VERIFY_FAILED" in str(e):
                        raise RemoteError(tls_failure(net.endpoint, e)) from None
                    raise TransientError(f"{type(e).__name__}: {e}") from None
                except httpx2.HTTPError as e:
                    raise RemoteError(f"{spec.name}: hub request failed: {e}") from None
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    raise RemoteError(f"{spec.name}: the hub at {net.endpoint} sent an invalid response ({type(e).__name__})") from None

    try:
        info = call(lambda: api.model_info(src.repo, revision=src.revision))
        commit = info.sha
        if not isinstance(commit, str) or not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise RemoteError(f"{spec.name}: the hub sent no commit for {where}")
        entries = call(lambda: [e for e in api.list_repo_tree(src.repo, revision=commit, recursive=True)
                                if hasattr(e, "blob_id")])
    except TransientError as e:
        raise RemoteError(f"{spec.name}: resolving {where} failed after {net.retries} attempts: {e}") from None

    selected = filter_repo_objects(entries, allow_patterns=list(src.include) or None,
                                   ignore_patterns=list(src.exclude) or None, key=lambda e: e.path)
    files = sorted((_locked_file(spec.name, e) for e in selected), key=lambda f: f.path)
    if not files:
        raise ManifestError(manifest.path, f"include/exclude match no file in {where}", spec.name, "include")
    log.info("resolved", model=spec.name, commit=commit, files=len(files), bytes=sum(f.size for f in files))
    return LockedModel(name=spec.name, fingerprint=spec.fingerprint, kind="repo", files=tuple(files),
                       repo=src.repo, revision=src.revision, commit=commit)


def _locked_file(model: str, entry) -> LockedFile:
    path = entry.path
    if not isinstance(path, str) or (why := check_relpath(path)):
        raise RemoteError(f"{model}: the hub listed an unsafe file path {path!r}: {why}")
    lfs = entry.lfs
    size = lfs.size if lfs else entry.size
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_SIZE:
        raise RemoteError(f"{model}: the hub listed {path!r} with an impossible size {size!r}")
    if lfs:
        sha256 = str(lfs.sha256).lower()
        if not _HEX64.fullmatch(sha256):
            raise RemoteError(f"{model}: the hub listed {path!r} with an invalid sha256")
        return LockedFile(path=path, size=size, sha256=sha256)
    if not isinstance(entry.blob_id, str) or not re.fullmatch(r"[0-9a-f]{40}", entry.blob_id):
        raise RemoteError(f"{model}: the hub listed {path!r} with an invalid blob id")
    return LockedFile(path=path, size=size, git_oid=entry.blob_id)


def _resolve_url(spec: ModelSpec, src: UrlSource, manifest: Manifest, net: Network, client: Client) -> LockedModel:
    urls = (src.url, *src.mirrors)
    size, sha256 = src.size, src.sha256
    if size is None or sha256 is None:
        head_size, head_sha = _head_any(spec.name, [follow_endpoint(src.url, net), *src.mirrors], net, client)
        size = head_size if size is None else size
        sha256 = sha256 or head_sha
    if sha256 is None:
        raise ManifestError(manifest.path, "required: the server publishes no sha256 for this URL", spec.name, "sha256")
    if size is None:
        raise RemoteError(f"{spec.name}: the server did not say how large {src.url} is; set 'size' in the manifest")
    return LockedModel(name=spec.name, fingerprint=spec.fingerprint, kind="url",
                       files=(LockedFile(path=src.filename, size=size, sha256=sha256),), urls=urls)


def _head_any(model: str, urls: list[str], net: Network, client: Client) -> tuple[int | None, str | None]:
    for i, url in enumerate(urls):
        try:
            return _head(model, url, net, client)
        except RemoteError as e:
            if i == len(urls) - 1:
                raise
            log.warning("source failed, trying next", model=model, error=str(e))
    raise AssertionError("unreachable")


def _head(model: str, url: str, net: Network, client: Client) -> tuple[int | None, str | None]:
    """Size and, for hub-hosted LFS files, sha256 from a HEAD; the hub puts both on its redirect."""
    try:
        for attempt in client.retrying("resolve", model):
            with attempt:
                resp = client.request("HEAD", url, allow_redirects=False)
                for _ in range(MAX_REDIRECTS + 1):
                    if not resp.is_redirect or "X-Linked-Size" in resp.headers:
                        break
                    resp = client.request("HEAD", urljoin(resp.url, resp.headers["Location"]), allow_redirects=False)
                else:
                    raise RemoteError(f"too many redirects resolving {url}")
                classify(resp, url)
    except TransientError as e:
        raise RemoteError(f"{model}: HEAD {url} failed after {net.retries} attempts: {e}") from None
    except (RemoteError, UsageError) as e:  # UsageError: redirected to plain http
        raise RemoteError(f"{model}: {e}") from None
    raw_size = resp.headers.get("X-Linked-Size") or resp.headers.get("Content-Length")
    size = int(raw_size) if raw_size and raw_size.isdigit() and int(raw_size) <= MAX_FILE_SIZE else None
    etag = (resp.headers.get("X-Linked-Etag") or resp.headers.get("ETag") or "").strip('W/"').lower()
    return size, etag if _HEX64.fullmatch(etag) else None
