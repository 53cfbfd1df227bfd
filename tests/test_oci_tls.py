"""A registry reference names no scheme: seeder speaks HTTPS to a registry unless it is local (localhost,
127.0.0.0/8, as Docker does) or listed in SEEDER_INSECURE_REGISTRIES, and trusts a private CA exactly as
for every other HTTPS connection (SEEDER_CA_BUNDLE and the variables requests reads).

A real distribution registry serves TLS with a certificate from a test CA. It must be reached by a name
that is not "local" yet resolves to 127.0.0.1: this machine's own host name (/etc/hosts maps it there).
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_seeder, write_manifest
from tests.registry import Registry, modelpack, push

pytestmark = pytest.mark.registry

FILES = {"config.json": b"{}\n", "model.safetensors": b"w" * 70000}


def loopback_name() -> str:
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        address = ""
    if not address.startswith("127."):
        pytest.skip(f"this machine's host name {name!r} does not resolve to 127.0.0.0/8 ({address or 'unresolved'})")
    return name


def make_pki(d: Path, name: str) -> tuple[Path, Path, Path]:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=seeder test registry CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "reg.key", "-out", "reg.csr", "-subj", f"/CN={name}")
    (d / "san.ext").write_text(f"subjectAltName=DNS:{name},IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "reg.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "reg.pem", "-days", "2", "-extfile", "san.ext")
    return d / "ca.pem", d / "reg.pem", d / "reg.key"


@pytest.fixture
def tls_registry(tmp_path):
    """A registry with a pushed model, then served over TLS from the same storage."""
    name = loopback_name()
    (tmp_path / "pki").mkdir()
    ca, cert, key = make_pki(tmp_path / "pki", name)
    with Registry(tmp_path / "reg") as plain:
        push(plain, "team/m:v1", modelpack(FILES))
    with Registry(tmp_path / "reg", tls=(cert, key)) as reg:
        yield reg, f"{name}:{reg.port}", ca


def seed(work: Path, host: str, **env: str):
    write_manifest(work / "models.toml", f'[[models]]\nname = "m"\noci = "{host}/team/m:v1"\n')
    return run_seeder("--manifest", str(work / "models.toml"), "--target", str(work / "models"),
                      SEEDER_RETRIES="0", **env)


def test_https_by_default_with_a_private_ca(tls_registry, tmp_path):
    reg, host, ca = tls_registry
    refused = seed(tmp_path, host)
    assert refused.code == 3 and "certificate" in refused.err.splitlines()[-1].lower(), refused
    run = seed(tmp_path, host, SEEDER_CA_BUNDLE=str(ca))
    assert run.code == 0, run
    assert (tmp_path / "models" / "m" / "model.safetensors").read_bytes() == FILES["model.safetensors"]


def test_plain_http_only_for_listed_registries(tmp_path):
    name = loopback_name()
    with Registry(tmp_path / "reg") as reg:
        push(reg, "team/m:v1", modelpack(FILES))
        host = f"{name}:{reg.port}"
        refused = seed(tmp_path, host)  # HTTPS to a plain-http server
        assert refused.code == 3 and "SEEDER_INSECURE_REGISTRIES" in refused.err.splitlines()[-1], refused
        run = seed(tmp_path, host, SEEDER_INSECURE_REGISTRIES=f"other.example:5000,{host}")
        assert run.code == 0, run
