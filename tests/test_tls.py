"""TLS: a hub with a private CA is refused by default, accepted once its CA bundle is given."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from tests.conftest import blob, run_seeder, seeder_env, url_entry, write_manifest
from tests.fakehub import FakeHub


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path, ips: tuple[str, ...] = ("127.0.0.1",)) -> Path:
    """A private CA (ca.pem) and a hub certificate (hub.pem, hub.key) for the given IP addresses."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=seeder test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "hub.key", "-out", "hub.csr", "-subj", "/CN=127.0.0.1",
             cwd=d)
    san = ",".join(f"IP:{ip}" for ip in ips)
    (d / "ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", "hub.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "hub.pem", "-days", "2", "-extfile", "ext", cwd=d)
    return d


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


class TlsHub(FakeHub):
    def __init__(self, pki: Path, host: str = "127.0.0.1"):
        super().__init__(host=host)
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(pki / "hub.pem", pki / "hub.key")

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def _serve(self, server) -> None:
        # Handshakes happen in the handler threads, so a client that rejects the certificate blocks no one.
        server.socket = self._ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        super()._serve(server)


@pytest.fixture
def tls_hub(pki):
    with TlsHub(pki) as hub:
        yield hub


DATA = blob(200_000, seed=8)


def _manifests(hub, tmp_path: Path) -> Path:
    hub.add_repo("org/m", {"w.safetensors": DATA, "config.json": b"{}"})
    url = hub.add_file("x.gguf", DATA)
    return write_manifest(tmp_path / "models.toml",
                          '[[models]]\nname = "m"\nrepo = "org/m"\n\n' + url_entry("x", url, DATA))


def test_private_ca_is_refused_by_default_with_a_clear_message(tls_hub, tmp_path):
    m = _manifests(tls_hub, tmp_path)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=tls_hub)
    assert run.code == 3, run
    assert "TLS verification failed" in run.err and "SEEDER_CA_BUNDLE" in run.err
    assert not (tmp_path / "t" / "m").exists()


@pytest.mark.parametrize("variable", ["SEEDER_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_ca_bundle_makes_it_work(variable, tls_hub, pki, tmp_path):
    m = _manifests(tls_hub, tmp_path)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), env=seeder_env(tls_hub.url, **{variable: str(pki / "ca.pem")}))
    assert run.code == 0, run
    assert (tmp_path / "t" / "m" / "w.safetensors").read_bytes() == DATA
    assert (tmp_path / "t" / "x" / "x.gguf").read_bytes() == DATA


def test_a_missing_ca_bundle_is_a_usage_error(tls_hub, tmp_path):
    m = _manifests(tls_hub, tmp_path)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"),
                     env=seeder_env(tls_hub.url, SEEDER_CA_BUNDLE=str(tmp_path / "no-such.pem")))
    assert run.code == 2, run
    assert "SEEDER_CA_BUNDLE" in run.err and "no such file" in run.err


def test_an_unreadable_ca_bundle_is_a_usage_error(tls_hub, tmp_path):
    m = _manifests(tls_hub, tmp_path)
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"),
                     env=seeder_env(tls_hub.url, SEEDER_CA_BUNDLE=str(tmp_path / "garbage.pem")))
    assert run.code == 2, run
    assert "cannot load it" in run.err
