"""The registry fixtures (tests/registry.py, tests/tokenserver.py) hold up against independent clients:
oras-py and skopeo push and pull through each kind of access control with every digest intact; Basic and
the token server refuse what they should; tokens expire when the lifetime says; kill() and restart() keep
what was stored. The OCI tests of issue 20 stand on these, so each fact is checked here, not assumed.

Deselect with ``-m "not registry"``.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import blob, file_sha256, sha256
from tests.registry import (  # noqa: F401  (fixtures: pytest finds them here)
    MANIFEST_TYPE,
    Registry,
    Request,
    any_registry,
    basic_registry,
    make_registry,
    modelpack,
    oras_client,
    push,
    registry,
    sha256_digest,
    skopeo,
    token_registry,
    write_docker_config,
)
from tests.tokenserver import READER, REGISTRY_LEEWAY, WRITER, TokenServer

pytestmark = pytest.mark.registry

FILES = {
    "model.safetensors": blob(300_000, seed=1),
    "config.json": b'{"hidden_size": 8}',
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',  # a nested path: placed by its title
}
PASSWORDS = (WRITER[1], READER[1])
# No credential or token in an assertion: each is sent by a call made before the assert, whose arguments
# pytest would otherwise print on a failure.


@pytest.fixture(autouse=True)
def no_developer_credentials(tmp_path: Path, monkeypatch):
    """oras-py reads ~/.docker/config.json whatever it is told: give it an empty home."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    return home


def _http(reg: Registry, method: str, path: str, headers: dict[str, str] | None = None,
          body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _basic(user: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _token(tokens: TokenServer, scope: str, user: tuple[str, str] | None = None) -> tuple[int, dict]:
    """Ask the token server as a client does: GET realm?service=&scope= with Basic credentials or none."""
    port = int(tokens.url.split(":")[2].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/token?service={tokens.service}&scope={scope}", headers=_basic(user) if user else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _manifest(reg: Registry, repo: str, ref: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    return _http(reg, "GET", f"/v2/{repo}/manifests/{ref}", {"Accept": MANIFEST_TYPE, **headers})


def _dir_blobs(path: Path) -> dict[str, bytes]:
    """What `skopeo copy ... dir:` wrote: blobs named by their hex digest, plus manifest.json and version."""
    return {f"sha256:{p.name}": p.read_bytes() for p in path.iterdir() if p.name not in ("manifest.json", "version")}


def _no_secret_in_logs(reg: Registry) -> None:
    text = reg.log.read_text() + reg.access_log.read_text()
    password, jwt_ = any(pw in text for pw in PASSWORDS), "eyJ" in text  # a JWT starts with base64 of '{"'
    assert not password, "a password is in the registry's logs"
    assert not jwt_, "a token is in the registry's logs"
    if reg.tokens is not None:
        assert not any(pw in repr(reg.tokens.requests) for pw in PASSWORDS), "a password is in the token log"


# -- independent clients, each kind of access control ----------------------------------------------------


def test_oras_and_skopeo_pull_what_oras_pushed_with_every_digest(any_registry: Registry, tmp_path: Path):
    reg = any_registry
    art = modelpack(FILES)
    assert push(reg, "team/tiny:v1", art, reg.credentials) == art.digest  # the registry kept our bytes
    authfile = reg.docker_config(tmp_path / "docker")
    ref = f"{reg.host}/team/tiny:v1"

    # oras-py: credentials from the Docker config file alone, files placed by their title annotation.
    out = tmp_path / "oras-out"
    pulled = oras_client(reg).pull(target=ref, outdir=str(out), config_path=str(authfile))
    assert sorted(Path(p).relative_to(out).as_posix() for p in pulled) == sorted(FILES)
    assert {name: file_sha256(out / name) for name in FILES} == {name: sha256(data) for name, data in FILES.items()}

    # skopeo: the manifest byte for byte, then a copy that checks every blob against its digest.
    home = tmp_path / "skopeo-home"
    raw = skopeo("inspect", "--raw", "--tls-verify=false", "--authfile", str(authfile), f"docker://{ref}", home=home)
    assert raw.returncode == 0, raw.stderr
    assert sha256_digest(raw.stdout.encode()) == art.digest
    copied = tmp_path / "skopeo-dir"
    run = skopeo("copy", "--src-tls-verify=false", "--src-authfile", str(authfile), f"docker://{ref}",
                 f"dir:{copied}", home=home)
    assert run.returncode == 0, run.stderr
    assert (copied / "manifest.json").read_bytes() == art.manifest
    got = _dir_blobs(copied)
    assert set(got) == set(art.blobs)
    assert all(sha256_digest(data) == digest for digest, data in got.items())

    # Without credentials the registry says no (where it guards anything), and nobody logged a secret.
    status, headers, _ = _manifest(reg, "team/tiny", "v1", {})
    if reg.auth == "none":
        assert status == 200
    else:
        assert status == 401
        assert headers["www-authenticate"].split(" ")[0] == ("Basic" if reg.auth == "basic" else "Bearer")
    _no_secret_in_logs(reg)


def test_docker_config_is_what_docker_login_writes(tmp_path: Path):
    path = write_docker_config(tmp_path, {"a.example:5000": ("alice", "pw:with:colons")})
    path = write_docker_config(tmp_path, {"b.example": ("bob", "other")})
    auths = json.loads(path.read_text())["auths"]
    assert set(auths) == {"a.example:5000", "b.example"}  # a second registry is added, the first kept
    assert base64.b64decode(auths["a.example:5000"]["auth"]) == b"alice:pw:with:colons"
    assert path.stat().st_mode & 0o077 == 0  # as docker leaves it: the owner's alone


# -- Basic ----------------------------------------------------------------------------------------------


def test_basic_refuses_a_wrong_password(basic_registry: Registry, tmp_path: Path):
    reg = basic_registry
    push(reg, "team/tiny:v1", modelpack(FILES), reg.credentials)
    wrong = (WRITER[0], "not-the-password")

    right = _manifest(reg, "team/tiny", "v1", _basic(WRITER))[0]
    status, headers, _ = _manifest(reg, "team/tiny", "v1", _basic(wrong))
    unknown = _manifest(reg, "team/tiny", "v1", _basic(("nobody", WRITER[1])))[0]
    assert (right, status, unknown) == (200, 401, 401)
    assert headers["www-authenticate"] == 'Basic realm="seeder-test-registry"'

    authfile = write_docker_config(tmp_path / "wrong", {reg.host: wrong})
    run = skopeo("inspect", "--raw", "--tls-verify=false", "--authfile", str(authfile),
                 f"docker://{reg.host}/team/tiny:v1", home=tmp_path / "skopeo-home")
    assert run.returncode != 0
    assert "unauthorized" in run.stderr
    leaked = wrong[1] in run.stderr
    assert not leaked, "skopeo printed the password"
    _no_secret_in_logs(reg)


# -- Bearer tokens --------------------------------------------------------------------------------------


def test_the_token_server_refuses_bad_credentials_and_its_tokens_open_the_registry(token_registry: Registry):
    reg = token_registry
    tokens = reg.tokens
    assert tokens is not None
    art = modelpack(FILES)
    push(reg, "team/tiny:v1", art, reg.credentials)
    scope = "repository:team/tiny:pull,push"

    for bad in ((WRITER[0], "not-the-password"), ("nobody", WRITER[1])):
        status, body = _token(tokens, scope, bad)
        assert status == 401
        assert not {"token", "access_token"} & set(body)

    status, body = _token(tokens, scope, WRITER)
    assert status == 200
    token = body["token"]
    same = body["access_token"] == token
    assert same and body["expires_in"] == tokens.lifetime
    # The JWT is what distribution 2.8 expects: RS256 by the certificate in x5c, which is the bundle's.
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    cert = x509.load_pem_x509_certificate(tokens.cert_path.read_bytes())
    assert base64.b64decode(header["x5c"][0]) == cert.public_bytes(serialization.Encoding.DER)
    # exp is set a minute early, against distribution's leeway (tokenserver.py): read it with the same.
    claims = jwt.decode(token, cert.public_key(), algorithms=["RS256"], audience=tokens.service,
                        issuer=tokens.issuer, leeway=REGISTRY_LEEWAY)
    assert {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"} <= set(claims)
    assert claims["sub"] == WRITER[0]
    assert claims["access"] == [{"type": "repository", "name": "team/tiny", "actions": ["pull", "push"]}]

    # The registry takes it, and it does check: the same claims signed by another key are refused.
    status, headers, data = _manifest(reg, "team/tiny", "v1", _bearer(token))
    assert (status, data) == (200, art.manifest)
    with TokenServer(reg.root / "impostor") as impostor:
        forged = impostor.issue(WRITER[0], claims["access"])
    status, headers, _ = _manifest(reg, "team/tiny", "v1", _bearer(forged))
    assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]

    # The reader's token pulls but does not push: the grant is in the token, the registry enforces it.
    status, body = _token(tokens, scope, READER)
    assert status == 200
    read_only = body["token"]
    pulled = _manifest(reg, "team/tiny", "v1", _bearer(read_only))[0]
    status, headers, _ = _http(reg, "PUT", "/v2/team/tiny/manifests/v2",
                               {"Content-Type": MANIFEST_TYPE, **_bearer(read_only)}, art.manifest)
    pushed = _http(reg, "PUT", "/v2/team/tiny/manifests/v2", {"Content-Type": MANIFEST_TYPE, **_bearer(token)},
                   art.manifest)[0]
    assert (pulled, status, pushed) == (200, 401, 201)
    assert 'error="insufficient_scope"' in headers["www-authenticate"]
    _no_secret_in_logs(reg)


@pytest.mark.parametrize("token_registry, anonymous_pull", [({}, True), ({"anonymous": set()}, False)],
                         indirect=["token_registry"], ids=["anonymous-pull", "private"])
def test_anonymous_pull_is_a_fixture_option(token_registry: Registry, anonymous_pull: bool, tmp_path: Path):
    reg = token_registry
    assert reg.tokens is not None
    art = modelpack(FILES)
    push(reg, "team/tiny:v1", art, reg.credentials)

    # No credentials still get a token (as from Docker Hub or Harbor), holding only what anonymous may do.
    status, body = _token(reg.tokens, "repository:team/tiny:pull,push")
    assert status == 200
    granted = jwt.decode(body["token"], options={"verify_signature": False})["access"][0]["actions"]
    assert granted == (["pull"] if anonymous_pull else [])
    pulled = _manifest(reg, "team/tiny", "v1", _bearer(body["token"]))[0]
    pushed = _http(reg, "POST", "/v2/team/tiny/blobs/uploads/", _bearer(body["token"]))[0]
    assert (pulled, pushed) == (200 if anonymous_pull else 401, 401)

    # skopeo goes the way a client does: the challenge, the realm, the token.
    home = tmp_path / "skopeo-home"
    anon = skopeo("inspect", "--raw", "--tls-verify=false", "--no-creds", f"docker://{reg.host}/team/tiny:v1",
                  home=home)
    assert (anon.returncode == 0) == anonymous_pull, anon.stderr
    authfile = reg.docker_config(tmp_path / "docker", READER)
    named = skopeo("inspect", "--raw", "--tls-verify=false", "--authfile", str(authfile),
                   f"docker://{reg.host}/team/tiny:v1", home=home)
    assert named.returncode == 0, named.stderr
    assert sha256_digest(named.stdout.encode()) == art.digest


def test_a_token_expires_after_its_lifetime_and_an_open_stream_outlives_it(token_registry: Registry):
    reg = token_registry
    tokens = reg.tokens
    assert tokens is not None
    big = blob(32 << 20, seed=2)  # well over the loopback socket buffers: the server is still sending
    art = modelpack({"model.safetensors": big})
    push(reg, "team/big:v1", art, reg.credentials)
    scope = "repository:team/big:pull"
    layer = f"/v2/team/big/blobs/{sha256_digest(big)}"

    lasting = _token(tokens, scope, READER)[1]["token"]
    tokens.lifetime = 2
    status, body = _token(tokens, scope, READER)
    issued = time.monotonic()
    assert status == 200 and body["expires_in"] == 2
    short = body["token"]
    fresh = _manifest(reg, "team/big", "v1", _bearer(short))[0]
    assert fresh == 200

    conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=10)
    try:
        conn.request("GET", layer, headers=_bearer(short))
        resp = conn.getresponse()
        assert resp.status == 200
        head = resp.read(1 << 20)
        # exp is in whole seconds: the registry refuses the token 1 to 2 s after it was issued.
        time.sleep(max(0.0, issued + 3 - time.monotonic()))

        # Expired: a new request with it is refused; the same moment, a token of the default lifetime is not.
        status, headers, _ = _manifest(reg, "team/big", "v1", _bearer(short))
        still = _manifest(reg, "team/big", "v1", _bearer(lasting))[0]
        assert (status, still) == (401, 200)
        assert 'error="invalid_token"' in headers["www-authenticate"]
        # The token is checked when a request starts, not while it runs: the open download goes on.
        assert not [r for r in reg.requests() if r.path == layer and r.method == "GET"], "already complete"
        assert sha256(head + resp.read()) == sha256(big)
    finally:
        conn.close()
    renewed = _token(tokens, scope, READER)[1]["token"]
    status = _http(reg, "GET", layer, {"Range": "bytes=0-9", **_bearer(renewed)})[0]
    assert status == 206


# -- the fixture's own controls ---------------------------------------------------------------------------


def test_the_request_log_and_the_storage_root(registry: Registry):
    reg = registry
    data = FILES["model.safetensors"]
    digest = sha256_digest(data)
    push(reg, "team/tiny:v1", modelpack(FILES))
    path = f"/v2/team/tiny/blobs/{digest}"

    status, headers, body = _http(reg, "GET", path, {"Range": "bytes=100-199"})
    assert (status, headers["content-range"], body) == (206, f"bytes 100-199/{len(data)}", data[100:200])
    assert reg.requests()[-1] == Request("GET", path, 206, 100, "")  # http.client sends no User-Agent

    # The stored copy is the one served, unchecked: what a test corrupts there, a client receives.
    assert reg.blob_path(digest).read_bytes() == data
    zeros = b"\0" * len(data)
    reg.blob_path(digest).write_bytes(zeros)
    status, headers, body = _http(reg, "GET", path)
    assert (status, sha256_digest(body)) == (200, sha256_digest(zeros))
    assert headers["docker-content-digest"] == digest  # the registry still names the digest it no longer has


def test_kill_and_restart_keep_the_port_the_storage_and_the_tokens(token_registry: Registry, tmp_path: Path):
    reg = token_registry
    big = blob(32 << 20, seed=3)
    art = modelpack({**FILES, "model.safetensors": big})
    push(reg, "team/tiny:v1", art, reg.credentials)
    token = _token(reg.tokens, "repository:team/tiny:pull", READER)[1]["token"]
    port, layer = reg.port, f"/v2/team/tiny/blobs/{sha256_digest(big)}"
    answered = len(reg.requests())

    # SIGKILL mid-download: the client gets a short body, and the log has no line for the cut request.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", layer, headers=_bearer(token))
    resp = conn.getresponse()
    resp.read(1 << 20)
    reg.kill()
    assert reg.proc.returncode == -9
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        resp.read()
    conn.close()
    with pytest.raises(ConnectionRefusedError):
        _http(reg, "GET", "/v2/")
    assert len(reg.requests()) == answered

    reg.restart()
    assert reg.port == port and reg.running
    # A token from before the crash still opens it (same certificate bundle); every blob is still there.
    status, _, body = _manifest(reg, "team/tiny", "v1", _bearer(token))
    assert (status, body) == (200, art.manifest)
    out = tmp_path / "oras-out"
    oras_client(reg, READER).pull(target=f"{reg.host}/team/tiny:v1", outdir=str(out))
    assert {name: file_sha256(out / name) for name in art.files} == {n: sha256(d) for n, d in art.files.items()}
