"""Hugging Face repos: a revision resolved to a commit, globs to files with their digests.

Repos are resolved through huggingface_hub's API client (it knows the hub's endpoints, paging and
auth conventions), imported only when a repo is resolved; seeding from a lock needs only
:func:`file_urls`, one ``resolve`` URL per file.
"""

from __future__ import annotations

import functools
import os
import re
from urllib.parse import quote

from .. import log
from ..errors import ManifestError, RemoteError, TransientError, tls_failure
from ..fetch.retry import hub_refusal, hub_refused, is_transient, retrying, transient
from ..fetch.transport import Client, tls_context
from ..settings import Network
from ..spec.lock import LockedFile, LockedModel
from ..spec.manifest import Manifest, ModelSpec
from ..spec.paths import check_relpath
from .url import MAX_FILE_SIZE

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def file_urls(model: LockedModel, file: LockedFile, net: Network) -> list[str]:
    return [f"{net.endpoint}/{model.repo}/resolve/{model.commit}/{quote(file.path)}"]


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
    _one_attempt_per_page()
    return HfApi(endpoint=net.endpoint, token=net.token or False, library_name="seeder")


def _one_attempt_per_page() -> None:
    """One retry policy: huggingface_hub retries paged listings (the file tree) itself, five times with its own
    waits and plain-text warnings in our JSON log, inside our attempts. Make each call one attempt; ours retry."""
    from huggingface_hub.utils import _pagination  # a private module: if it moves, its retries merely stay

    backoff = getattr(_pagination, "http_backoff", None)
    if backoff is not None and not isinstance(backoff, functools.partial):
        _pagination.http_backoff = functools.partial(backoff, retry_on_exceptions=(), retry_on_status_codes=())


def resolve(spec: ModelSpec, manifest: Manifest, client: Client) -> LockedModel:
    from huggingface_hub.utils import filter_repo_objects

    src, net = spec.source, client.net
    api = _hub_api(net)
    where = f"{src.repo}@{src.revision}"
    try:
        info = _call(lambda: api.model_info(src.repo, revision=src.revision), spec.name, src, net)
        commit = info.sha
        if not isinstance(commit, str) or not _HEX40.fullmatch(commit):
            raise RemoteError(f"{spec.name}: the hub sent no commit for {where}")
        entries = _call(lambda: [e for e in api.list_repo_tree(src.repo, revision=commit, recursive=True)
                                 if hasattr(e, "blob_id")], spec.name, src, net)
    except TransientError as e:
        raise RemoteError(f"{spec.name}: resolving {where} failed after {net.attempts} attempts: {e}") from None

    selected = filter_repo_objects(entries, allow_patterns=list(src.include) or None,
                                   ignore_patterns=list(src.exclude) or None, key=lambda e: e.path)
    files = sorted((_locked_file(spec.name, e) for e in selected), key=lambda f: f.path)
    if not files:
        raise ManifestError(manifest.path, f"include/exclude match no file in {where}", spec.name, "include")
    log.info("resolved", model=spec.name, commit=commit, files=len(files), bytes=sum(f.size for f in files))
    return LockedModel(name=spec.name, fingerprint=spec.fingerprint, kind="repo", files=tuple(files),
                       repo=src.repo, revision=src.revision, commit=commit)


def _call(fn, model: str, src, net: Network):
    """One hub API call under the retry policy, its failures mapped to seeder's errors."""
    import httpx2
    from huggingface_hub import errors as hf

    for attempt in retrying(net, "resolve", model):
        with attempt:
            try:
                return fn()
            except hf.HfHubHTTPError as e:
                raise _http_error(e, model, src, net) from None
            except (httpx2.TransportError, httpx2.TimeoutException) as e:
                if "CERTIFICATE_VERIFY_FAILED" in str(e):
                    raise RemoteError(tls_failure(net.endpoint, e)) from None
                raise TransientError(f"{type(e).__name__}: {e}") from None
            except httpx2.HTTPError as e:
                raise RemoteError(f"{model}: hub request failed: {e}") from None
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise RemoteError(f"{model}: the hub at {net.endpoint} sent an invalid response "
                                  f"({type(e).__name__})") from None
    raise AssertionError("unreachable")


def _http_error(e, model: str, src, net: Network) -> Exception:
    from huggingface_hub import errors as hf

    where = f"{src.repo}@{src.revision}"
    status = e.response.status_code if e.response is not None else 0
    headers = e.response.headers if e.response is not None else {}
    if isinstance(e, hf.RevisionNotFoundError):
        return RemoteError(f"{model}: revision not found: {where} (check the branch, tag or commit)")
    if isinstance(e, hf.RepositoryNotFoundError) and not headers.get("X-Error-Code"):
        headers = {"X-Error-Code": "RepoNotFound"}  # huggingface_hub's reading of a bare 401: missing or private
    if why := hub_refusal(headers, src.repo, net.endpoint, bool(net.token)):
        return RemoteError(f"{model}: {why}")
    if status in (401, 403):
        return RemoteError(f"{model}: {hub_refused(status, where, bool(net.token))}")
    if is_transient(status):
        return transient(status, headers, f"hub answered HTTP {status}", net, None)
    return RemoteError(f"{model}: hub answered HTTP {status} for {where}")


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
    if not isinstance(entry.blob_id, str) or not _HEX40.fullmatch(entry.blob_id):
        raise RemoteError(f"{model}: the hub listed {path!r} with an invalid blob id")
    return LockedFile(path=path, size=size, git_oid=entry.blob_id)
