"""Registry credentials as Docker and podman users already have them, and the token dance.

Where credentials come from, first found wins: ``REGISTRY_AUTH_FILE`` (podman, skopeo); else podman's
``$XDG_RUNTIME_DIR/containers/auth.json`` and ``~/.config/containers/auth.json``, then Docker's
``$DOCKER_CONFIG/config.json`` (else ``~/.docker/config.json``); in each, ``credHelpers[host]``, then
``auths[host]``, then ``credsStore`` (``docker-credential-<name> get``, the host on stdin). A Kubernetes
imagePullSecret (``.dockerconfigjson``) mounted as a file is the same format. An identity token (an
OAuth2 refresh token, as ``docker login`` keeps for Azure) is not supported: a clear error says so.

How they are used: every request goes out as it is first (anonymous, or with the token already held for
its repository); a 401 names the scheme. ``Basic``: send the credentials. ``Bearer realm=…,service=…,
scope=…``: ask the realm for a token for that scope, with the credentials when there are any, and send
it. A token that expires mid-download shows as one more 401 on some request, which renews it (the
transport retries a request once after :meth:`RegistryAuth.challenged`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .. import log
from ..errors import RemoteError, TransientError, UsageError
from ..settings import Network

_CHALLENGE = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^\s,]+)')
_REPOSITORY = re.compile(r"/v2/(.+?)/(?:blobs|manifests|tags|referrers)/")
DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
"""Docker Hub's name in config files and to credential helpers, as Docker writes it."""
IDENTITY_TOKEN_USER = "<token>"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str = ""
    """Where they were found, for messages: a file or a helper, never the secret."""

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def config_files() -> list[Path]:
    """The credential files to read, in order: podman's, then Docker's (REGISTRY_AUTH_FILE replaces podman's)."""
    if auth_file := os.environ.get("REGISTRY_AUTH_FILE"):
        files = [Path(auth_file)]
    else:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        files = [Path(runtime) / "containers" / "auth.json"] if runtime else []
        files.append(Path.home() / ".config" / "containers" / "auth.json")
    docker = os.environ.get("DOCKER_CONFIG")
    files.append(Path(docker) / "config.json" if docker else Path.home() / ".docker" / "config.json")
    return files


def credentials_for(host: str) -> Credentials | None:
    for path in config_files():
        try:
            config = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UsageError(f"registry credentials {path}: cannot read it ({type(e).__name__})") from None
        if not isinstance(config, dict):
            raise UsageError(f"registry credentials {path}: not a JSON object")
        if found := _from_config(config, host, path):
            return found
    return None


def _keys(host: str) -> list[str]:
    """How a config file may name the registry: Docker Hub by its legacy index URL among others."""
    if host in DOCKER_HUB:
        return [DOCKER_HUB_KEY, *DOCKER_HUB]
    return [host, f"https://{host}", f"http://{host}"]


def _from_config(config: dict, host: str, path: Path) -> Credentials | None:
    helpers = config.get("credHelpers") or {}
    for key in _keys(host):
        if isinstance(helpers, dict) and isinstance(helpers.get(key), str):
            return _from_helper(helpers[key], _keys(host)[0])
    auths = config.get("auths") or {}
    for key in _keys(host):
        entry = auths.get(key) if isinstance(auths, dict) else None
        if isinstance(entry, dict) and (found := _from_entry(entry, path)):
            return found
    if isinstance(config.get("credsStore"), str):
        return _from_helper(config["credsStore"], _keys(host)[0])
    return None


def _from_entry(entry: dict, path: Path) -> Credentials | None:
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise UsageError(f"registry credentials {path}: an 'auth' value is not base64 of user:password") from None
        return _checked(Credentials(user, password, str(path)))
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return _checked(Credentials(entry["username"], entry["password"], str(path)))
    if isinstance(entry.get("identitytoken"), str):
        return _checked(Credentials(IDENTITY_TOKEN_USER, entry["identitytoken"], str(path)))
    return None


def _checked(found: Credentials) -> Credentials:
    if found.username == IDENTITY_TOKEN_USER:
        # Docker trades it for access tokens with an OAuth2 POST; sent as a password it would only be refused.
        raise UsageError(f"registry credentials from {found.source}: an identity token (OAuth2 refresh token) is not "
                         "supported; use a credential helper or a username and password (REGISTRY_AUTH_FILE)")
    log.hide(found.password)
    return found


def _from_helper(name: str, host: str) -> Credentials | None:
    helper = f"docker-credential-{name}"
    try:
        done = subprocess.run([helper, "get"], input=host, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UsageError(f"registry credentials for {host}: {helper} is not installed") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"registry credentials for {host}: {helper} did not answer in 60 s") from None
    if done.returncode != 0:
        if "credentials not found" in done.stdout + done.stderr:
            return None
        # Its output may hold a secret: say only that it failed.
        raise UsageError(f"registry credentials for {host}: {helper} get exited {done.returncode}")
    try:
        found = json.loads(done.stdout)
        return _checked(Credentials(found["Username"], found["Secret"], helper))
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"registry credentials for {host}: {helper} get gave no Username and Secret") from None


def challenge(header: str | None) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate: Bearer realm="…",service="…"`` -> ("bearer", {"realm": …, "service": …})."""
    scheme, _, rest = (header or "").strip().partition(" ")
    params = {(m[1] or m[3]).lower(): m[2] if m[1] else m[4] for m in _CHALLENGE.finditer(rest)}
    return scheme.lower(), params


class RegistryAuth:
    """One registry's credentials and tokens, shared by every thread of a run. Signs requests to the registry's
    own scheme, host and port only; the credentials go to the token realm the registry names, as with Docker."""

    def __init__(self, host: str, base: str, net: Network, push: bool = False):
        self.host, self.push = host, push
        split = urlsplit(base)
        self._origin = (split.scheme, split.netloc.lower())
        self._net = net
        self._lock = threading.Lock()
        self._loaded = False
        self._credentials: Credentials | None = None
        self._basic = False
        self._tokens: dict[str, str] = {}  # scope -> token
        self.sent_credentials = False
        """Whether a refusal came despite credentials: the messages differ."""

    @property
    def credentials(self) -> Credentials | None:
        with self._lock:
            if not self._loaded:
                self._credentials, self._loaded = credentials_for(self.host), True
            return self._credentials

    def _mine(self, url: str) -> bool:
        split = urlsplit(url)
        return (split.scheme, split.netloc.lower()) == self._origin

    def scope(self, url: str) -> str | None:
        """The token scope a request needs; a cross-repository mount also reads the repository it mounts from."""
        split = urlsplit(url)
        m = _REPOSITORY.search(split.path)
        if not m:
            return None
        scope = f"repository:{m[1]}:{'pull,push' if self.push else 'pull'}"
        source = parse_qs(split.query).get("from")
        return f"{scope} repository:{source[0]}:pull" if source else scope

    def headers(self, url: str) -> dict[str, str]:
        if not self._mine(url):
            return {}
        if self._basic and self.credentials:
            return {"Authorization": self.credentials.basic()}
        token = self._tokens.get(self.scope(url) or "")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def challenged(self, url: str, header: str | None) -> bool:
        if not self._mine(url):
            return False
        scheme, params = challenge(header)
        if scheme == "basic":
            if self._basic or not self.credentials:
                return False
            self._basic = self.sent_credentials = True
            return True
        if scheme != "bearer" or not params.get("realm"):
            return False
        scope = self.scope(url)
        token = self._token(params, scope or params.get("scope", ""))
        log.hide(token)
        self._tokens[scope or ""] = token
        return True

    def _token(self, params: dict[str, str], scope: str) -> str:
        import requests

        query: dict[str, str | list[str]] = {"service": params["service"]} if params.get("service") else {}
        if scope:
            query["scope"] = scope.split(" ")  # one parameter per repository, as the token spec has it
        creds = self.credentials
        self.sent_credentials = creds is not None
        realm = params["realm"]
        # A plain-http registry may name a realm on itself over plain http too; anywhere else, the rules of all URLs.
        if not (self._origin[0] == "http" and urlsplit(realm).hostname == urlsplit(f"//{self.host}").hostname
                and urlsplit(realm).scheme == "http"):
            self._net.check_url(realm)
        try:
            resp = requests.get(realm, params=query, auth=(creds.username, creds.password) if creds else None,
                                timeout=(self._net.connect_timeout, self._net.read_timeout), verify=self._net.verify)
        except requests.RequestException as e:
            raise TransientError(f"token server {urlsplit(realm).netloc}: {type(e).__name__}") from None
        if resp.status_code in (401, 403):
            raise RemoteError(self.refused(scope.split(":")[1] if scope.startswith("repository:") else scope))
        if resp.status_code >= 500 or resp.status_code == 429:
            raise TransientError(f"token server {urlsplit(realm).netloc}: HTTP {resp.status_code}")
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RemoteError(f"token server {urlsplit(realm).netloc} sent no token (HTTP {resp.status_code})")
        log.debug("registry token", registry=self.host, scope=scope)
        return token

    def refusal(self, url: str) -> str | None:
        m = _REPOSITORY.search(urlsplit(url).path) if self._mine(url) else None
        return self.refused(m[1]) if m else None

    def refused(self, repository: str) -> str:
        """One line for a refusal: which registry, which repository, and what to check."""
        if self.sent_credentials:
            why = f"credentials from {self.credentials.source} were refused" if self.credentials else "refused"
        else:
            why = "anonymous access refused; log in (docker login / REGISTRY_AUTH_FILE)"
        return f"registry {self.host} refused access to {repository}: {why}"
