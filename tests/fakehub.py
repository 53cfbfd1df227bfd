"""A fake Hugging Face Hub plus a plain file server, for tests. Standard library only.

It serves what `huggingface_hub` 2.x reads (see /work/shared/notes/hf-hub-contract.md):

* ``GET /api/models/{repo}[/revision/{rev}][?blobs=true]``      model info (``sha``, ``siblings``)
* ``GET /api/models/{repo}/tree/{rev}[/{path}][?recursive=true]``  tree listing, paged with ``Link`` headers
* ``POST /api/models/{repo}/paths-info/{rev}``                     info for given paths (form or JSON body)
* ``GET /api/models/{repo}/refs``                                   branches and tags
* ``HEAD|GET /{repo}/resolve/{rev}/{path}``                         file bytes, ``Range`` aware
* ``HEAD|GET /files/{path}``                                        plain URL hosting
* a "CDN" on another origin (127.0.0.2, or another port) that LFS resolves redirect to, as the real hub does.

As on the real hub:

* Which files are LFS follows the repo's ``.gitattributes`` (``add_repo`` commits the hub's default one
  unless the files bring their own), so a large file can be a plain git file, verified by its git blob id.
* An LFS resolve answers 302 with ``X-Linked-Size``, ``X-Linked-Etag`` (the sha256), ``X-Repo-Commit``,
  ``ETag`` (and ``X-Xet-Hash`` for files marked Xet-backed), its ``Location`` a signed URL on the CDN that
  expires after ``link_ttl`` seconds; the CDN answers 403 to an expired or tampered URL. A renamed repo
  answers 307 to its new name. A missing or private repo is 401 ``RepoNotFound`` (404 with the hub's
  token); a gated one is 401 ``GatedRepo`` without a token and 403 ``GatedRepo`` with a wrong one.

Faults (resets, truncation, status codes, stalls, corruption, ...) can be injected per path. A fault that
cuts or changes a body strikes at a file offset (``at=``, or ``after=`` bytes into the response, or
``offset=`` for ``corrupt``) and waits for a response that carries that byte; whether and where a fault
fired is in the request log (``fault``, ``fault_at``), and :meth:`FakeHub.unfired_faults` lists those
still waiting, so a test can prove its fault did something.

In-process::

    with FakeHub() as hub:
        commit = hub.add_repo("org/name", {"config.json": b"{}", "model.safetensors": Path("big.bin")})

Standalone (e.g. in a python:3.11-slim container)::

    python tests/fakehub.py --data DIR [--host 0.0.0.0] [--port 8080] [--token T] [--no-cdn]
                           [--cdn-port P] [--cdn-url URL] [--link-ttl SECONDS]

where DIR holds ``repos/<org>/<name>/<files...>`` (optional ``repos/<org>/<name>.commit`` with the commit sha)
and ``files/<path>`` (served at ``/files/<path>``). A repo directory without a ``.gitattributes`` is classified
by the default one, which is not listed: the repo is exactly the files on disk. The CDN listens on
``--host`` at another port; bound to every address, it is named in redirects by the host the client used
for the hub (so a container that reaches the hub at the bridge gateway reaches the CDN there too), unless
``--cdn-url`` says otherwise. Control endpoints: ``GET /_log``, ``POST /_log/clear``, ``GET /_faults`` (the
faults still waiting), ``POST /_faults`` (JSON ``{"match", "kind", "times", "api", "methods", ...params}``),
``POST /_faults/clear``.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import hmac
import itertools
import json
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

try:  # Unix only; lets a "reset" fault wait until the bytes before it have really left
    import fcntl
    from termios import TIOCOUTQ
except ImportError:  # pragma: no cover
    TIOCOUTQ = None

CHUNK = 1 << 20  # 1 MiB reads when streaming files from disk
LINK_CHUNK = 256 << 10  # slot size on a shared throttled link: small, so many connections share it evenly
LAST_MODIFIED = "2024-01-01T00:00:00.000Z"
FAULT_KINDS = frozenset(
    {"reset", "truncate", "status", "stall", "corrupt", "ignore_range", "wrong_length", "garbage_json",
     "missing_headers"}
)
BODY_FAULTS = frozenset({"reset", "truncate", "stall", "corrupt"})  # strike at a byte of the body
GITATTRIBUTES = ".gitattributes"
# What the hub commits to a new model repo (plus *.gguf, which GGUF repos add).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gguf", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle",
        "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite",
        "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*")
).encode()
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def git_blob_sha1(data: bytes) -> str:
    """The id git (and the hub's ``oid``) gives a file's content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file stored in git in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def commit_sha(files: Mapping[str, str], parent: str | None = None) -> str:
    """Deterministic commit id: sha1 of the sorted ``path\\0sha256\\n`` lines (prefixed by the parent, if any)."""
    text = "".join(f"{path}\0{sha}\n" for path, sha in sorted(files.items()))
    if parent:
        text = f"parent {parent}\n" + text
    return hashlib.sha1(text.encode()).hexdigest()


def lfs_rules(text: bytes | str) -> list[tuple[str, bool]]:
    """(pattern, is LFS) per line of a ``.gitattributes`` that sets or unsets ``filter``; later lines win."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    rules = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        for attr in words[1:]:
            if attr == "filter=lfs":
                rules.append((words[0], True))
            elif attr in ("-filter", "!filter") or attr.startswith("filter="):
                rules.append((words[0], False))
    return rules


def _matches(pattern: str, path: str) -> bool:
    # gitattributes: a pattern without a slash matches the name at any depth, one with a slash the whole path.
    if "/" not in pattern.rstrip("/"):
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    pattern = pattern.lstrip("/")
    return fnmatch.fnmatchcase(path, pattern) or (
        pattern.startswith("**/") and fnmatch.fnmatchcase(path, pattern[3:]))


class Blob:
    """File content held in memory (bytes) or on disk (Path, streamed in chunks, never read whole)."""

    def __init__(self, data: bytes | None = None, path: Path | None = None) -> None:
        self.data = data
        self.path = path
        if data is not None:
            self.size = len(data)
            self.sha256 = hashlib.sha256(data).hexdigest()
        else:
            assert path is not None
            self.size = path.stat().st_size
            digest = hashlib.sha256()
            for chunk in self.iter_range(0, self.size):
                digest.update(chunk)
            self.sha256 = digest.hexdigest()
        self._git_sha1: str | None = None

    @property
    def git_sha1(self) -> str:
        # Lazy: only non-LFS entries need it.
        if self._git_sha1 is None:
            digest = hashlib.sha1(b"blob %d\0" % self.size)
            for chunk in self.iter_range(0, self.size):
                digest.update(chunk)
            self._git_sha1 = digest.hexdigest()
        return self._git_sha1

    @property
    def xet_hash(self) -> str:
        # The real one is a merkle hash of the file's chunks: 64 hex digits that are not its sha256.
        return hashlib.sha256(b"xet:" + self.sha256.encode()).hexdigest()

    def read(self) -> bytes:
        return b"".join(self.iter_range(0, self.size))

    def iter_range(self, start: int, end: int, chunk_size: int = CHUNK) -> Iterator[bytes]:
        if self.data is not None:
            view = memoryview(self.data)
            for pos in range(start, end, chunk_size):
                yield bytes(view[pos : min(end, pos + chunk_size)])
            return
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(start)
            pos = start
            while pos < end:
                chunk = f.read(min(chunk_size, end - pos))
                if not chunk:  # file shrank under us; the client will see a short body
                    return
                pos += len(chunk)
                yield chunk


@dataclass
class Commit:
    sha: str
    files: dict[str, Blob]
    lfs: list[tuple[str, bool]] = field(default_factory=list)  # .gitattributes rules
    xet: frozenset[str] = frozenset()  # paths of LFS files stored in Xet

    def is_lfs(self, path: str) -> bool:
        verdict = False
        for pattern, lfs in self.lfs:
            if _matches(pattern, path):
                verdict = lfs
        return verdict and path != GITATTRIBUTES


@dataclass
class Repo:
    repo_id: str
    gated: bool = False
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        sha = self.branches.get(rev) or self.tags.get(rev) or (rev if _COMMIT_RE.fullmatch(rev) else None)
        return self.commits.get(sha) if sha else None


class Headers(dict[str, str]):
    """Request headers; lookups ignore case."""

    def __init__(self, items: Any = ()) -> None:
        super().__init__((k.lower(), v) for k, v in dict(items).items())

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class RequestRecord:
    method: str
    path: str  # percent-decoded, without the query
    query: str  # raw query string
    headers: Headers
    server: str  # "hub" or "cdn"
    kind: str  # "api", "resolve", "files", "cdn" or "other"
    conn: int  # connection number: equal numbers mean a reused keep-alive connection
    status: int | None = None
    bytes_sent: int = 0  # body bytes handed to the socket
    fault: str | None = None  # kind of the fault that fired on this request, if any
    fault_at: int | None = None  # the file offset a body fault struck at (reset, truncate, stall, corrupt)
    refused: str | None = None  # why the CDN refused a signed URL ("expired", "bad signature")
    started: float = field(default_factory=time.monotonic)  # when the request arrived (time.monotonic)
    finished: float | None = None  # when the response was written or abandoned

    @property
    def range(self) -> str | None:
        return self.headers.get("range")

    @property
    def range_start(self) -> int | None:
        """First byte asked for by a ``bytes=N-[M]`` Range, else None."""
        m = re.fullmatch(r"\s*bytes\s*=\s*(\d+)\s*-\s*\d*\s*", self.range or "")
        return int(m.group(1)) if m else None

    @property
    def auth_value(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def auth(self) -> bool:
        return self.auth_value is not None

    def to_json(self) -> dict[str, Any]:
        # No header values here: /_log is for other processes, and must not leak the token.
        return {"method": self.method, "path": self.path, "query": self.query, "server": self.server,
                "kind": self.kind, "conn": self.conn, "status": self.status, "bytes_sent": self.bytes_sent,
                "range": self.range, "auth": self.auth, "fault": self.fault, "fault_at": self.fault_at,
                "refused": self.refused}


@dataclass(eq=False)
class Fault:
    match: str
    kind: str
    times: int = 1  # how many more times it will fire
    api: bool = False
    methods: tuple[str, ...] | None = None  # None: GET (plus HEAD for missing_headers; any method for api)
    params: dict[str, Any] = field(default_factory=dict)
    following: Fault | None = None  # armed only once this one has fired
    fired: int = 0
    released: threading.Event = field(default_factory=threading.Event)  # ends a stall early

    def applies(self, path: str, method: str, api: bool, kinds: frozenset[str] | None) -> bool:
        if self.times <= 0 or self.api != api or self.match not in path:
            return False
        if kinds is not None and self.kind not in kinds:
            return False
        if self.following is not None and not self.following.fired:
            return False
        methods = self.methods
        if methods is None:
            methods = (method,) if api else ("HEAD", "GET") if self.kind == "missing_headers" else ("GET",)
        return method in methods

    def strikes(self, start: int, end: int, size: int) -> int | None:
        """The file offset a body fault strikes at in a response carrying bytes [start, end), None if it misses."""
        if self.kind == "corrupt":
            at = int(self.params.get("offset", size // 2))
        elif "at" in self.params:
            at = int(self.params["at"])
        elif "after" in self.params:
            at = start + int(self.params["after"])
        else:
            at = start if self.kind == "stall" else start + (end - start) // 2
        return at if start <= at < end else None

    def release(self) -> None:
        """Let a stalled response go on now."""
        self.released.set()

    def __repr__(self) -> str:
        return f"Fault({self.kind} on {self.match!r}, {self.times} left, fired {self.fired}, {self.params})"


class _Aborted(Exception):
    """The connection was dropped (by a fault, by the client, or by stop()); stop handling the request."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # stalled handlers must never keep the process alive
    request_queue_size = 128  # 8 parallel downloaders connecting at once must not overflow the backlog

    def __init__(self, addr: tuple[str, int], hub: FakeHub, role: str) -> None:
        self.hub = hub
        self.role = role
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        # Wake handlers blocked reading the next keep-alive request or writing to a client that stopped reading.
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # clients hanging up are business as usual
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, so clients can reuse connections
    server_version = "fakehub/1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes; don't wait on delayed ACKs
    timeout = 120  # idle keep-alive connections eventually free their thread
    _conn_ids = itertools.count(1)
    rec: RequestRecord | None = None  # the current request's log record (None for control endpoints)
    pending: Fault | None = None  # a body fault taken for this response that has not struck yet

    def setup(self) -> None:
        super().setup()
        self.conn_id = next(self._conn_ids)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log replaces stderr noise

    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    def parse_request(self) -> bool:
        self.rec = None  # the handler lives as long as the connection: reset per request
        self.pending = None
        return super().parse_request()

    def send_response(self, code: int, message: str | None = None) -> None:
        if self.rec is not None:
            self.rec.status = code
        super().send_response(code, message)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    # -- routing ---------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        self.raw_path = split.path
        self.query = parse_qs(split.query)
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = unquote(split.path)
        segs = split.path.strip("/").split("/")  # split before unquoting: %2F inside a segment stays put
        role = self.server.role
        if role == "cdn":
            kind = "cdn"
        elif path.startswith("/api/"):
            kind = "api"
        elif path.startswith("/files/"):
            kind = "files"
        elif "resolve" in segs[1:3]:
            kind = "resolve"
        else:
            kind = "other"
        if not (role == "hub" and path.startswith("/_")):  # control endpoints stay out of the log
            self.rec = RequestRecord(self.command, path, split.query, Headers(self.headers.items()), role, kind,
                                     self.conn_id)
            self.hub._record(self.rec)
        try:
            if self.rec is None:
                self._control(path)
            elif kind == "cdn":
                self._cdn(segs)
            elif kind == "api":
                self._api(segs)
            elif kind == "files":
                self._files(path[len("/files/"):])
            elif kind == "resolve":
                self._resolve(segs)
            else:
                self._error(404, None, f"Not Found: {path}")
        except _Aborted:
            self.close_connection = True
        except Exception:  # a bug here, or a malformed request: say so rather than hang up silently
            traceback.print_exc()
            self.close_connection = True
            if self.rec is None or self.rec.status is None:
                self._error(500, None, "fakehub internal error")
        finally:
            if self.pending is not None:  # taken, never struck (the client left first): it stays armed
                self.hub._give_back(self.pending)
                self.pending = None
            if self.rec is not None:
                self.rec.finished = time.monotonic()

    def _take_fault(self, api: bool = False, kinds: frozenset[str] | None = None,
                    body: tuple[int, int, int] | None = None) -> Fault | None:
        """The first armed fault for this request; body faults only if they strike inside ``body``."""
        assert self.rec is not None
        fault = self.hub._take_fault(self.rec.path, self.command, api, kinds, body)
        if fault is None:
            return None
        if fault.kind in BODY_FAULTS:
            self.pending = fault  # fires where it strikes, in _respond
        else:
            self._fired(fault, None)
        return fault

    def _fired(self, fault: Fault, at: int | None) -> None:
        assert self.rec is not None
        self.rec.fault, self.rec.fault_at = fault.kind, at
        self.pending = None
        self.hub._count_fired(fault)

    def _control(self, path: str) -> None:
        hub = self.hub
        if self.command == "GET" and path == "/_log":
            self._json(200, [r.to_json() for r in hub.requests])
        elif self.command == "POST" and path == "/_log/clear":
            hub.clear_log()
            self._json(200, {"ok": True})
        elif self.command == "GET" and path == "/_faults":
            self._json(200, [{"match": f.match, "kind": f.kind, "times": f.times, "fired": f.fired, **f.params}
                             for f in hub.unfired_faults()])
        elif self.command == "POST" and path == "/_faults":
            try:
                spec = json.loads(self.body or b"{}")
                hub.add_fault(spec.pop("match"), spec.pop("kind"), spec.pop("times", 1), api=spec.pop("api", False),
                              methods=spec.pop("methods", None), **spec)
            except (KeyError, ValueError, TypeError, AttributeError) as e:
                self._json(400, {"error": f"bad fault: {e!r}"})
                return
            self._json(200, {"ok": True})
        elif self.command == "POST" and path == "/_faults/clear":
            hub.clear_faults()
            self._json(200, {"ok": True})
        else:
            self._json(404, {"error": "unknown control endpoint"})

    # -- access ----------------------------------------------------------------------------------------

    def _has_token(self) -> bool:
        token = self.hub.token
        return token is not None and self.headers.get("Authorization") == f"Bearer {token}"

    def _visible(self, repo: Repo | None, repo_id: str) -> bool:
        """Answer RepoNotFound for a missing repo, or a private one without the token, as the hub does."""
        if repo is not None and (not repo.private or self._has_token()):
            return True
        # 401, not 404, unless authenticated: which private repos exist is nobody else's business.
        self._error(404 if self._has_token() else 401, "RepoNotFound",
                    f"Repository Not Found for url: {self._url()}. Please make sure you specified the correct "
                    f"`repo_id` ({repo_id}) and `repo_type`.")
        return False

    def _authorized(self, repo: Repo | None) -> bool:
        """Answer GatedRepo unless the request carries the hub token where one is required.

        401 without a token; 403 with one that is not granted access (here: any other token)."""
        hub = self.hub
        if hub.token is None or not (hub.require_token_everywhere or (repo is not None and repo.gated)):
            return True
        if self._has_token():
            return True
        name = repo.repo_id if repo else unquote(self.raw_path)
        self._error(403 if self.headers.get("Authorization") else 401, "GatedRepo",
                    f"Access to {name} is restricted. You must have access to it and be authenticated to access "
                    "it. Please log in.")
        return False

    def _renamed(self, prefix: str, segs: list[str]) -> bool:
        """Answer 307 to the new name when ``segs`` start with a repo's old name (relative, as the hub does)."""
        found = self.hub._renamed_to(segs)
        if found is None:
            return False
        old, new = found
        rest = "/".join(segs[len(old.split("/")):])
        query = urlsplit(self.path).query
        location = f"{prefix}/{new}" + (f"/{rest}" if rest else "") + (f"?{query}" if query else "")
        self._respond(307, {"Location": location, "Content-Type": "text/plain; charset=utf-8"},
                      f"Temporary Redirect. Redirecting to {location}".encode())
        return True

    def _url(self) -> str:
        return f"http://{self.headers.get('Host') or self.hub.host}{self.raw_path}"

    # -- API -------------------------------------------------------------------------------------------

    def _api(self, segs: list[str]) -> None:
        # segs: ["api", "models", <repo segments>..., <action>, ...]
        if len(segs) < 3 or segs[1] != "models":
            self._error(404, None, "Only model repos are served")
            return
        if self._renamed("/api/models", segs[2:]):
            return
        repo, repo_id, rest = self.hub._split_repo(segs[2:])
        if self.hub.require_token_everywhere and not self._authorized(repo):
            return
        fault = self._take_fault(api=True)
        if fault and self._fault_preempts(fault):
            return
        if not self._visible(repo, repo_id):
            return
        assert repo is not None
        action = rest[0] if rest else ""
        if action == "refs" and self.command == "GET":
            self._json(200, self._refs(repo), fault=fault)
            return
        if action == "":
            rev, sub = "main", []
        elif action in ("revision", "paths-info") and len(rest) > 1:
            rev, sub = "/".join(rest[1:]), []
        elif action == "tree" and len(rest) > 1:
            rev, sub = rest[1], rest[2:]
        else:
            self._error(404, None, f"Not Found: {unquote(self.raw_path)}")
            return
        rev = unquote(rev)
        commit = repo.resolve(rev)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        if action in ("", "revision") and self.command == "GET":
            self._json(200, self._model_info(repo, commit, blobs=self._flag("blobs")), fault=fault)
        elif action == "tree" and self.command == "GET":
            self._tree(commit, unquote("/".join(sub)).strip("/"), fault)
        elif action == "paths-info" and self.command == "POST":
            self._json(200, self._paths_info(commit), fault=fault)
        else:
            self._error(405, None, f"{self.command} not allowed here")

    def _flag(self, name: str) -> bool:
        return self.query.get(name, ["false"])[-1].lower() in ("1", "true")

    def _refs(self, repo: Repo) -> dict[str, Any]:
        def refs(names: dict[str, str], prefix: str) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"refs/{prefix}/{n}", "targetCommit": sha} for n, sha in sorted(names.items())]

        return {"branches": refs(repo.branches, "heads"), "tags": refs(repo.tags, "tags"), "converts": []}

    def _model_info(self, repo: Repo, commit: Commit, blobs: bool) -> dict[str, Any]:
        siblings: list[dict[str, Any]] = []
        for path, blob in sorted(commit.files.items()):
            entry: dict[str, Any] = {"rfilename": path}
            if blobs:
                file_entry = self.hub._file_entry(commit, path, blob)
                entry.update(blobId=file_entry["oid"], size=blob.size)
                if "lfs" in file_entry:
                    entry["lfs"] = {"sha256": blob.sha256, "size": blob.size,
                                    "pointerSize": file_entry["lfs"]["pointerSize"]}
            siblings.append(entry)
        return {"_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.sha,
                "lastModified": LAST_MODIFIED, "createdAt": LAST_MODIFIED, "private": repo.private,
                "gated": "auto" if repo.gated else False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": [], "siblings": siblings}

    def _tree(self, commit: Commit, prefix: str, fault: Fault | None) -> None:
        entries = self.hub._tree_entries(commit, prefix, recursive=self._flag("recursive"))
        if entries is None:
            self._error(404, "EntryNotFound", f"{prefix} does not exist on this revision",
                        {"X-Repo-Commit": commit.sha})
            return
        # Offset cursor paging, announced like the hub does: Link: <absolute url>; rel="next"
        cursor = self.query.get("cursor", ["0"])[-1]
        cursor = int(cursor) if cursor.isdigit() else 0
        size = self.hub.tree_page_size
        headers = {}
        if cursor + size < len(entries):
            params = [(k, v) for k, vs in self.query.items() if k != "cursor" for v in vs]
            params.append(("cursor", str(cursor + size)))
            host = self.headers.get("Host") or f"{self.hub.host}:{self.hub.port}"
            headers["Link"] = f'<http://{host}{self.raw_path}?{urlencode(params)}>; rel="next"'
        self._json(200, entries[cursor : cursor + size], headers, fault=fault)

    def _paths_info(self, commit: Commit) -> list[dict[str, Any]]:
        # huggingface_hub posts a form (paths=a&paths=b&expand=False); other clients may post JSON.
        text = self.body.decode("utf-8", "replace")
        wanted = json.loads(text).get("paths", []) if text.lstrip().startswith("{") else parse_qs(text).get("paths", [])
        entries = {e["path"]: e for e in self.hub._tree_entries(commit, "", recursive=True) or []}
        return [entries[p.strip("/")] for p in wanted if p.strip("/") in entries]

    # -- file content ----------------------------------------------------------------------------------

    def _resolve(self, segs: list[str]) -> None:
        if self._renamed("", segs):
            return
        repo, repo_id, rest = self.hub._split_repo(segs)
        if not rest or rest[0] != "resolve" or len(rest) < 3:
            self._error(404, None, f"Not Found: {unquote(self.raw_path)}")
            return
        rev, filename = unquote(rest[1]), unquote("/".join(rest[2:]))
        if not self._visible(repo, repo_id) or not self._authorized(repo):
            return
        assert repo is not None
        commit = repo.resolve(rev)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        blob = commit.files.get(filename)
        if blob is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist on {rev}", {"X-Repo-Commit": commit.sha})
            return
        hub = self.hub
        lfs = commit.is_lfs(filename)
        redirect = lfs and hub._cdn_server is not None
        # A redirect carries no bytes: leave body faults for the CDN request that does.
        fault = self._take_fault(kinds=frozenset({"status", "missing_headers"}) if redirect else None,
                                 body=None if redirect else self._body(blob))
        if fault and self._fault_preempts(fault):
            return
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{blob.sha256 if lfs else blob.git_sha1}"'}
        if lfs and filename in commit.xet:
            headers["X-Xet-Hash"] = blob.xet_hash
        if redirect:
            # As the real hub: metadata of the target on the 302 itself; ETag there is the pointer's git oid.
            headers.update({"ETag": f'"{git_blob_sha1(lfs_pointer(blob.sha256, blob.size))}"',
                            "X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size),
                            "Location": hub._signed_url(self._cdn_base(), repo.repo_id, commit.sha, filename)})
        if fault and fault.kind == "missing_headers":
            for name in ("X-Repo-Commit", "ETag", "X-Linked-Etag"):
                headers.pop(name, None)
        if redirect:
            headers["Content-Type"] = "text/plain; charset=utf-8"
            self._respond(302, headers, f"Found. Redirecting to {headers['Location']}".encode())
        else:
            self._serve_blob(blob, headers, fault)

    def _cdn_base(self) -> str:
        hub = self.hub
        if hub.cdn_url:
            return hub.cdn_url.rstrip("/")
        assert hub._cdn_server is not None
        host, port = hub._cdn_server.server_address[:2]
        if host in _WILDCARD_HOSTS:
            # Bound everywhere: the client reaches it by the name it used for the hub (a container: the gateway).
            host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or "127.0.0.1"
        return f"{hub.scheme}://{_netloc(host, port)}"

    def _files(self, path: str) -> None:
        if self.hub.require_token_everywhere and not self._authorized(None):
            return
        blob = self.hub._files.get(path.strip("/"))
        if blob is None:
            self._error(404, None, f"Not Found: {path}")
            return
        fault = self._take_fault(body=self._body(blob))
        if fault and self._fault_preempts(fault):
            return
        headers = {} if fault and fault.kind == "missing_headers" else {"ETag": f'"{blob.sha256}"'}
        self._serve_blob(blob, headers, fault)

    def _cdn(self, segs: list[str]) -> None:
        # /<repo>/resolve/<commit sha>/<path>?Expires=..&Signature=..: the hub's path, pinned and signed.
        if not self._signature_valid():
            return
        repo, _, rest = self.hub._split_repo(segs)
        commit = repo.commits.get(rest[1]) if repo and len(rest) >= 3 and rest[0] == "resolve" else None
        blob = commit.files.get(unquote("/".join(rest[2:]))) if commit else None
        if blob is None:
            self._respond(404, {"Content-Type": "application/xml"},
                          b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code></Error>")
            return
        fault = self._take_fault(body=self._body(blob))
        if fault and self._fault_preempts(fault):
            return
        name = unquote(segs[-1])
        ascii_name = name.encode("ascii", "replace").decode().replace('"', "_")  # header values are latin-1
        headers = {"Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{ascii_name}\";"}
        if not (fault and fault.kind == "missing_headers"):
            # The real CDN's ETag is 64 hex digits too, but not the sha256: clients must use X-Linked-Etag.
            headers["ETag"] = f'"{hashlib.sha256(b"cdn:" + blob.sha256.encode()).hexdigest()}"'
        self._serve_blob(blob, headers, fault)

    def _signature_valid(self) -> bool:
        """Refuse (403, as CloudFront does) a URL whose signature does not match, or whose time is up."""
        assert self.rec is not None
        expires = self.query.get("Expires", [""])[-1]
        signature = self.query.get("Signature", [""])[-1]
        if not hmac.compare_digest(signature, self.hub._sign(unquote(self.raw_path), expires)):
            self.rec.refused = "bad signature"
        elif float(expires) < time.time():
            self.rec.refused = "expired"
        else:
            return True
        message = "Request has expired" if self.rec.refused == "expired" else "Invalid signature"
        self._respond(403, {"Content-Type": "application/xml"},
                      f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                      f"<Message>{message}</Message></Error>".encode())
        return False

    def _body(self, blob: Blob) -> tuple[int, int, int] | None:
        """(start, end, size) of the bytes this request asks for, None if none can be sent."""
        span = _parse_range(self.headers.get("Range"), blob.size)
        if span == "unsatisfiable":
            return None
        start, end = span or (0, blob.size)
        return start, end, blob.size

    def _serve_blob(self, blob: Blob, headers: dict[str, str], fault: Fault | None) -> None:
        headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        span = None if fault and fault.kind == "ignore_range" else _parse_range(self.headers.get("Range"), blob.size)
        if span == "unsatisfiable":
            self._respond(416, {**headers, "Content-Range": f"bytes */{blob.size}"}, b"", fault=fault)
        elif span is None:
            self._respond(200, headers, blob, fault=fault)
        else:
            start, end = span
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
            self._respond(206, headers, blob, span=span, fault=fault)

    # -- response writing ------------------------------------------------------------------------------

    def _fault_preempts(self, fault: Fault) -> bool:
        """Faults that replace the response entirely; returns True when one was sent."""
        if fault.kind == "status":
            code = int(fault.params.get("code", 500))
            self._json(code, {"error": f"injected {code}"}, dict(fault.params.get("headers") or {}))
            return True
        if fault.kind == "garbage_json":
            self._respond(200, {"Content-Type": "application/json"}, b"not json{")
            return True
        return False

    def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        extra = dict(headers or {})
        if code:
            extra.update({"X-Error-Code": code, "X-Error-Message": message})
        self._json(status, {"error": message}, extra)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None,
              fault: Fault | None = None) -> None:
        body = json.dumps(payload).encode()
        self._respond(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body,
                      fault=fault)

    def _respond(self, status: int, headers: dict[str, str], body: Blob | bytes, *,
                 span: tuple[int, int] | None = None, fault: Fault | None = None) -> None:
        blob = body if isinstance(body, Blob) else Blob(data=body)
        start, end = span or (0, blob.size)
        length = end - start
        kind = fault.kind if fault else None
        if self.command == "HEAD" and kind in ("reset", "truncate", "stall"):
            # No body to cut short: misbehave before the headers instead.
            assert fault is not None
            self._fired(fault, None)
            if kind == "reset":
                self._reset()
            if kind == "truncate":
                raise _Aborted  # closes with a FIN and no response
            self._stall(fault)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if kind == "wrong_length":
            # The body that follows is the real one; closing afterwards keeps the lie from poisoning a reuse.
            self.send_header("Content-Length", str(max(0, length + int(fault.params.get("delta", 100)))))
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return
        at = fault.strikes(start, end, blob.size) if fault and kind in ("reset", "truncate", "stall") else None
        if at is None:
            self._send(blob, start, end, fault if kind == "corrupt" else None)
            return
        assert fault is not None
        self._send(blob, start, at, None)
        self._fired(fault, at)
        if kind == "truncate":
            self.close_connection = True  # socketserver then closes with a clean FIN
        elif kind == "reset":
            self._reset()
        else:
            self._stall(fault)
            self._send(blob, at, end, None)

    def _stall(self, fault: Fault) -> None:
        """Hold the response for the fault's ``seconds``, or until it is released; reset if the hub stops."""
        deadline = time.monotonic() + float(fault.params.get("seconds", 30))
        while not fault.released.is_set() and (left := deadline - time.monotonic()) > 0:
            if self.hub._stopping.wait(min(left, 0.05)):
                self._reset()

    def _send(self, blob: Blob, start: int, end: int, corrupt: Fault | None) -> None:
        bps = self.hub.throttle_bps
        link = self.hub.throttle_total_bps
        # Small chunks when throttled so the rate is smooth rather than bursty.
        chunk_size = max(1, min(CHUNK, bps // 20)) if bps else CHUNK
        if link:
            chunk_size = max(1, min(chunk_size, LINK_CHUNK, link // 50))
        flip = corrupt.strikes(start, end, blob.size) if corrupt else None
        if self.hub.zero_copy and blob.path is not None and flip is None:
            self._sendfile(blob.path, start, end, chunk_size)
            return
        t0, sent, pos = time.monotonic(), 0, start
        for chunk in blob.iter_range(start, end, chunk_size):
            if link:
                self._pace_link(len(chunk))
            flipped = flip is not None and pos <= flip < pos + len(chunk)
            if flipped:
                mutable = bytearray(chunk)
                mutable[flip - pos] ^= 0xFF
                chunk = bytes(mutable)
            if self.hub._stopping.is_set():
                self._reset()
            if flipped:  # before the write: a client may have the whole body before this thread runs again
                assert corrupt is not None
                self._fired(corrupt, flip)
            try:
                self.wfile.write(chunk)
            except OSError:
                raise _Aborted from None
            pos += len(chunk)
            sent += len(chunk)
            if self.rec is not None:
                self.rec.bytes_sent += len(chunk)
            if bps:
                delay = sent / bps - (time.monotonic() - t0)
                if delay > 0 and self.hub._stopping.wait(delay):
                    self._reset()

    def _pace_link(self, n: int) -> None:
        """Wait for this chunk's slot on the shared link (``throttle_total_bps``, all responses together)."""
        hub = self.hub
        rate = hub.throttle_total_bps
        if not rate:
            return
        with hub._link_lock:
            now = time.monotonic()
            slot = max(now, hub._link_next)
            hub._link_next = slot + n / rate
        if slot > now and hub._stopping.wait(slot - now):
            self._reset()

    def _sendfile(self, path: Path, start: int, end: int, chunk_size: int) -> None:
        """Like the loop in :meth:`_send` for an on-disk blob, with ``sendfile`` (no copies through Python).

        Pacing is per connection rather than per response: each chunk waits for its slot on the connection
        (and on the link), so a keep-alive connection stays under the cap across responses, and nothing
        waits after the last chunk of a response.
        """
        bps = self.hub.throttle_bps
        pos = start
        with open(path, "rb") as f:
            while pos < end:
                n = min(chunk_size, end - pos)
                if bps:
                    now = time.monotonic()
                    slot = max(now, getattr(self, "_conn_next", 0.0))
                    self._conn_next = slot + n / bps
                    if slot > now and self.hub._stopping.wait(slot - now):
                        self._reset()
                self._pace_link(n)
                if self.hub._stopping.is_set():
                    self._reset()
                try:
                    n = self.connection.sendfile(f, pos, n)
                except OSError:
                    raise _Aborted from None
                if n <= 0:  # file shrank under us; the client will see a short body
                    return
                pos += n
                if self.rec is not None:
                    self.rec.bytes_sent += n

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0, then close)."""
        conn = self.connection
        try:
            # Let bytes already written reach the client first (bounded: the client may not be reading).
            deadline = time.monotonic() + 1.0
            while TIOCOUTQ is not None and time.monotonic() < deadline and not self.hub._stopping.is_set():
                if struct.unpack("i", fcntl.ioctl(conn.fileno(), TIOCOUTQ, b"\0\0\0\0"))[0] == 0:
                    break
                time.sleep(0.005)
        except OSError:
            pass
        try:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.rfile.close()  # the makefile() reference would otherwise keep the fd open past close()
        conn.close()
        raise _Aborted


def _parse_range(value: str | None, size: int) -> tuple[int, int] | str | None:
    """(start, end_exclusive) for a single satisfiable byte range, "unsatisfiable", or None to send it all.

    Malformed and multi-range headers are ignored (a 200 with the full body), as RFC 9110 allows.
    """
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if not m or m.group(1) == m.group(2) == "":
        return None
    first, last = m.groups()
    if first == "":  # suffix range: the last N bytes
        n = int(last)
        return (max(0, size - n), size) if n > 0 and size > 0 else "unsatisfiable"
    start = int(first)
    end = size if last == "" else int(last) + 1
    if last != "" and end <= start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class FakeHub:
    """A fake Hugging Face Hub on 127.0.0.1 (ephemeral port by default). See the module docstring.

    ``cdn``: LFS resolves redirect to a second server, by default on 127.0.0.2 (another port on the hub's
    host when that is not 127.0.0.1 over http, or when 127.0.0.2 is missing); ``cdn_host`` binds it elsewhere
    and ``cdn_url`` names it in redirects. ``link_ttl``: seconds a signed CDN URL stays valid (may be changed
    while running; it applies to URLs signed afterwards).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, cdn: bool = True, cdn_host: str | None = None,
                 cdn_port: int = 0, cdn_url: str | None = None, link_ttl: float = 3600.0, token: str | None = None,
                 require_token_everywhere: bool = False, tree_page_size: int = 1000) -> None:
        self.host = host
        self.port = port
        self.token = token  # when set, gated repos (or everything, see below) need "Authorization: Bearer <token>"
        self.require_token_everywhere = require_token_everywhere
        self.tree_page_size = tree_page_size
        self.link_ttl = link_ttl
        self.cdn_url = cdn_url
        self.throttle_bps: int | None = None  # cap on body bytes/s per response
        self.throttle_total_bps: int | None = None  # cap on body bytes/s of all responses together (the "link")
        self.zero_copy = False  # send on-disk files with sendfile (a benchmark server must not be the bottleneck)
        self._link_lock = threading.Lock()
        self._link_next = 0.0
        self._secret = os.urandom(32)  # signs CDN URLs
        self._repos: dict[str, Repo] = {}
        self._renames: dict[str, str] = {}  # old repo id -> new
        self._files: dict[str, Blob] = {}
        self._blobs: dict[str, Blob] = {}  # by sha256
        self._blob_cache: dict[tuple[str, int, int], Blob] = {}  # Path files are hashed once
        self._faults: list[Fault] = []
        self._log: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._cdn_server: _Server | None = None
        self._cdn_bind: tuple[str | None, int] | None = (cdn_host, cdn_port) if cdn else None
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{_netloc(self.host, self.port)}"

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def cdn(self) -> str | None:
        """Base URL of the CDN server (as reached from this machine), or None when LFS files are served directly."""
        if self._cdn_server is None:
            return None
        if self.cdn_url:
            return self.cdn_url.rstrip("/")
        host, port = self._cdn_server.server_address[:2]
        return f"{self.scheme}://{_netloc('127.0.0.1' if host in _WILDCARD_HOSTS else host, port)}"

    def start(self) -> FakeHub:
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self, "hub")
        self.port = self._server.server_address[1]
        self._serve(self._server)
        if self._cdn_bind is not None:
            self.enable_cdn(*self._cdn_bind)
        return self

    def enable_cdn(self, host: str | None = None, port: int = 0) -> str:
        """Start the CDN server (if not running); LFS resolves then answer 302 to it. Its URL ("" until start())."""
        if self._cdn_bind is None or host is not None:
            self._cdn_bind = (host, port)
        if self._server is None:  # started along with the hub
            return ""
        if self._cdn_server is None:
            host, port = self._cdn_bind
            # Another host than the hub's, like the real CDN; a TLS hub's certificate names only its own host.
            default = "127.0.0.2" if self.host == "127.0.0.1" and self.scheme == "http" else self.host
            try:
                self._cdn_server = _Server((host or default, port), self, "cdn")
            except OSError:
                if host is not None:
                    raise
                # No 127.0.0.2 (e.g. macOS): another port on the hub's host is still another origin for clients.
                self._cdn_server = _Server((self.host, port), self, "cdn")
            self._serve(self._cdn_server)
        return self.cdn or ""

    def _serve(self, server: _Server) -> None:
        # A short poll interval keeps stop() fast; each test starts and stops a hub.
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name=f"fakehub-{server.role}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()  # releases stalls and throttle sleeps
        for server in (self._server, self._cdn_server):
            if server is not None:
                server.shutdown()
                server.close_connections()
                server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server = self._cdn_server = None
        self._threads.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- content ---------------------------------------------------------------------------------------

    def _blob(self, content: bytes | bytearray | Path) -> Blob:
        if isinstance(content, (bytes, bytearray, memoryview)):
            blob = Blob(data=bytes(content))
        elif isinstance(content, Path):
            st = content.stat()
            key = (str(content.resolve()), st.st_size, st.st_mtime_ns)
            with self._lock:
                cached = self._blob_cache.get(key)
            blob = cached or Blob(path=content)
            with self._lock:
                self._blob_cache[key] = blob
        else:
            raise TypeError(f"file content must be bytes or pathlib.Path, not {type(content).__name__}")
        with self._lock:
            return self._blobs.setdefault(blob.sha256, blob)

    def add_repo(self, repo_id: str, files: Mapping[str, bytes | Path], branch: str = "main",
                 gated: bool = False, commit: str | None = None, *, private: bool = False,
                 gitattributes: bytes | None = DEFAULT_GITATTRIBUTES, list_gitattributes: bool = True,
                 xet: bool | Iterable[str] = False) -> str:
        """Commit `files` (the full file set) to `repo_id` and move `branch` to it. Returns the commit sha.

        Old commits stay served by sha. Without `commit`, the sha is derived from the content (and the
        branch's previous commit, so re-adding the same files still makes a new commit).

        LFS files are those the commit's ``.gitattributes`` marks ``filter=lfs``: the one in `files`, else
        `gitattributes` (None: no LFS at all), committed as a file unless `list_gitattributes` is false.
        `private`: RepoNotFound without the token. `xet`: LFS files stored in Xet (True: all of them).
        """
        if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo_id):
            raise ValueError(f"bad repo id {repo_id!r}")
        blobs = {_clean_path(path): self._blob(content) for path, content in files.items()}
        if GITATTRIBUTES in blobs:
            rules = lfs_rules(blobs[GITATTRIBUTES].read())
        else:
            rules = lfs_rules(gitattributes or b"")
            if gitattributes is not None and list_gitattributes:
                blobs[GITATTRIBUTES] = self._blob(gitattributes)
        with self._lock:
            self._renames.pop(repo_id, None)  # a new repo under an old name ends the redirect, as on the hub
            repo = self._repos.setdefault(repo_id, Repo(repo_id))
            repo.gated, repo.private = gated, private
            sha = commit or commit_sha({p: b.sha256 for p, b in blobs.items()}, repo.branches.get(branch))
            if not _COMMIT_RE.fullmatch(sha):
                raise ValueError(f"commit must be 40 lowercase hex digits, got {sha!r}")
            found = Commit(sha, dict(sorted(blobs.items())), rules)
            in_xet = set(found.files) if xet is True else set() if xet is False else set(xet)
            found.xet = frozenset(p for p in found.files if found.is_lfs(p) and p in in_xet)
            repo.commits[sha] = found
            repo.branches[branch] = sha
        return sha

    def add_tag(self, repo_id: str, tag: str, commit: str) -> None:
        with self._lock:
            repo = self._repos[repo_id]
            if commit not in repo.commits:
                raise ValueError(f"{repo_id} has no commit {commit}")
            repo.tags[tag] = commit

    def rename_repo(self, old: str, new: str) -> None:
        """Move a repo to a new name; the old one answers 307 to it (API and resolve), as on the hub."""
        if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", new):
            raise ValueError(f"bad repo id {new!r}")
        with self._lock:
            if new in self._repos:
                raise ValueError(f"{new} exists")
            repo = self._repos.pop(old)
            repo.repo_id = new
            self._repos[new] = repo
            self._renames = {o: (new if n == old else n) for o, n in self._renames.items()}
            self._renames[old] = new
            self._renames.pop(new, None)

    def add_file(self, path: str, content: bytes | Path) -> str:
        """Host `content` as a plain URL; returns ``<url>/files/<path>``."""
        path = _clean_path(path)
        blob = self._blob(content)
        with self._lock:
            self._files[path] = blob
        return f"{self.url}/files/{quote(path)}"

    def _file_entry(self, commit: Commit, path: str, blob: Blob) -> dict[str, Any]:
        if not commit.is_lfs(path):
            return {"type": "file", "oid": blob.git_sha1, "size": blob.size, "path": path}
        pointer = lfs_pointer(blob.sha256, blob.size)
        entry = {"type": "file", "oid": git_blob_sha1(pointer), "size": blob.size, "path": path,
                 "lfs": {"oid": blob.sha256, "size": blob.size, "pointerSize": len(pointer)}}
        if path in commit.xet:
            entry["xetHash"] = blob.xet_hash
        return entry

    def _tree_entries(self, commit: Commit, prefix: str, recursive: bool) -> list[dict[str, Any]] | None:
        """Entries under directory `prefix` ("" for the root), or None if it is not a directory."""
        files = {p: self._file_entry(commit, p, b) for p, b in commit.files.items()}
        dirs: dict[str, list[str]] = {}  # directory -> oids of the files below it (for a stable tree oid)
        for path, entry in files.items():
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.setdefault("/".join(parts[:i]), []).append(entry["oid"])
        if prefix and prefix not in dirs:
            return None
        base = f"{prefix}/" if prefix else ""
        entries: list[dict[str, Any]] = []
        for path in sorted([*files, *dirs]):
            if not path.startswith(base) or (not recursive and "/" in path[len(base):]):
                continue
            if path in files:
                entries.append(files[path])
            else:
                oid = hashlib.sha1("\n".join(sorted(dirs[path])).encode()).hexdigest()
                entries.append({"type": "directory", "oid": oid, "size": 0, "path": path})
        return entries

    def _split_repo(self, segs: list[str]) -> tuple[Repo | None, str, list[str]]:
        """(repo or None, repo id, remaining segments); prefers "org/name", falls back to legacy "name"."""
        segs = [unquote(s) for s in segs[:2]] + segs[2:]
        with self._lock:
            if len(segs) >= 2 and f"{segs[0]}/{segs[1]}" in self._repos:
                return self._repos[f"{segs[0]}/{segs[1]}"], f"{segs[0]}/{segs[1]}", segs[2:]
            if segs and segs[0] in self._repos:
                return self._repos[segs[0]], segs[0], segs[1:]
        return None, "/".join(segs[:2]), segs[2:]

    def _renamed_to(self, segs: list[str]) -> tuple[str, str] | None:
        """(old id, new id) when `segs` start with the old name of a renamed repo."""
        names = [unquote(s) for s in segs[:2]]
        with self._lock:
            for old in ("/".join(names[:2]) if len(names) == 2 else None, names[0] if names else None):
                if old in self._renames and old not in self._repos:
                    return old, self._renames[old]
        return None

    def _sign(self, path: str, expires: str) -> str:
        return hmac.new(self._secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def _signed_url(self, base: str, repo_id: str, commit: str, filename: str) -> str:
        path = f"/{repo_id}/resolve/{commit}/{filename}"
        expires = f"{time.time() + self.link_ttl:.3f}"
        return f"{base}{quote(path)}?{urlencode({'Expires': expires, 'Signature': self._sign(path, expires)})}"

    # -- faults and log --------------------------------------------------------------------------------

    def add_fault(self, match: str, kind: str, times: int = 1, *, api: bool = False,
                  methods: tuple[str, ...] | list[str] | None = None, following: Fault | None = None,
                  **params: Any) -> Fault:
        """Misbehave on the next `times` matching requests (path contains `match`).

        Body faults (reset, truncate, stall, corrupt) wait for a response carrying the byte they strike at
        (``at``: a file offset; ``after``: bytes into the response; ``offset`` for corrupt; default: mid-body,
        mid-file for corrupt). `following`: armed only once that fault has fired.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        fault = Fault(match, kind, int(times), bool(api), tuple(m.upper() for m in methods) if methods else None,
                      params, following)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            for fault in self._faults:
                fault.release()
            self._faults.clear()

    def unfired_faults(self) -> list[Fault]:
        """Faults that have not fired as many times as they were added for (a test's fault that did nothing)."""
        with self._lock:
            return [f for f in self._faults if f.times > 0]

    def release_stalls(self) -> None:
        with self._lock:
            for fault in self._faults:
                fault.release()

    def _take_fault(self, path: str, method: str, api: bool, kinds: frozenset[str] | None = None,
                    body: tuple[int, int, int] | None = None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if not fault.applies(path, method, api, kinds):
                    continue
                if fault.kind in BODY_FAULTS and method != "HEAD" and body is not None \
                        and fault.strikes(*body) is None:
                    continue  # aims at a byte this response does not carry: wait for one that does
                fault.times -= 1
                return fault
        return None

    def _give_back(self, fault: Fault) -> None:
        with self._lock:
            fault.times += 1

    def _count_fired(self, fault: Fault) -> None:
        with self._lock:
            fault.fired += 1

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self._log.append(rec)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    @property
    def cdn_saw_auth(self) -> bool:
        """Whether any request to the CDN carried an Authorization header (a client leaking the hub token)."""
        return any(r.auth for r in self.requests if r.server == "cdn")

    def body_bytes(self, path_contains: str | None = None) -> int:
        """Body bytes sent with file content (GETs answered 200 or 206 by resolve, files or the cdn)."""
        return sum(r.bytes_sent for r in self.requests
                   if r.method == "GET" and r.kind in ("resolve", "files", "cdn") and r.status in (200, 206)
                   and (path_contains is None or path_contains in r.path))


def _clean_path(path: str) -> str:
    path = path.strip("/")
    if not path or any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"bad file path {path!r}")
    return path


def load_dir(hub: FakeHub, data: Path, *, gated: bool = False) -> None:
    """Load ``data/repos/<org>/<name>/...`` as one commit each on main, and ``data/files/...`` as plain URLs.

    A repo without a ``.gitattributes`` of its own is classified by the default one, which is not listed:
    the repo's files are exactly those on disk."""
    repos = data / "repos"
    for repo_dir in sorted(p for p in repos.glob("*/*") if p.is_dir()) if repos.is_dir() else []:
        files = {f.relative_to(repo_dir).as_posix(): f for f in sorted(repo_dir.rglob("*"))
                 if f.is_file() and ".git" not in f.relative_to(repo_dir).parts}
        marker = repo_dir.with_name(repo_dir.name + ".commit")
        commit = marker.read_text().strip() if marker.is_file() else None
        hub.add_repo(f"{repo_dir.parent.name}/{repo_dir.name}", files, gated=gated, commit=commit,
                     list_gitattributes=False)
    plain = data / "files"
    for f in sorted(plain.rglob("*")) if plain.is_dir() else []:
        if f.is_file():
            hub.add_file(f.relative_to(plain).as_posix(), f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, required=True, help="directory with repos/<org>/<name>/ and files/")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--token", help="require 'Authorization: Bearer TOKEN' for every repo (all are gated)")
    parser.add_argument("--token-everywhere", action="store_true", help="with --token: for /files and the API too")
    parser.add_argument("--no-cdn", action="store_true", help="serve LFS files from the hub itself, no redirect")
    parser.add_argument("--cdn-port", type=int, default=0, help="the CDN's port on --host (0: a free one)")
    parser.add_argument("--cdn-url", help="base URL of the CDN in redirects (default: the hub's host, CDN port)")
    parser.add_argument("--link-ttl", type=float, default=3600.0, help="seconds a signed CDN URL stays valid")
    args = parser.parse_args(argv)

    hub = FakeHub(args.host, args.port, cdn=not args.no_cdn, cdn_host=args.host, cdn_port=args.cdn_port,
                  cdn_url=args.cdn_url, link_ttl=args.link_ttl, token=args.token,
                  require_token_everywhere=args.token_everywhere)
    load_dir(hub, args.data, gated=args.token is not None)
    # Docker stops containers with SIGTERM; python as PID 1 would otherwise ignore it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    hub.start()
    print(f"fakehub listening on {hub.url}", flush=True)
    if hub.cdn:
        print(f"fakehub cdn on {hub.cdn}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
