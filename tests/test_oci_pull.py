"""The ``oci`` source against real registries (tests/registry.py: distribution 2.8, open, Basic and Bearer):
locking pins the manifest digest and every file, seeding fetches blobs through the Range engine and
verifies them, a moved tag changes nothing until ``seeder refresh``, references and refusals give one line.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from tests.conftest import blob, run_seeder, sha256, write_manifest
from tests.registry import (  # noqa: F401  (fixtures)
    any_registry,
    basic_registry,
    make_registry,
    modelpack,
    push,
    registry,
    token_registry,
)

pytestmark = pytest.mark.registry

FILES = {"config.json": b'{"hidden_size": 8}\n', "model.safetensors": blob(3 << 20, seed=1),
         "sub/tokenizer.json": b'{"v": 1}\n', "README.md": b"# tiny\n"}


def oci_manifest(work: Path, reference: str, extra: str = "") -> Path:
    return write_manifest(work / "models.toml", f'[[models]]\nname = "tiny"\noci = "{reference}"\n{extra}')


def seed(work: Path, *args: str, env: dict[str, str] | None = None, **extra):
    return run_seeder("--manifest", str(work / "models.toml"), "--target", str(work / "models"), *args,
                      SEEDER_MULTIPART_MIN="1048576", SEEDER_PART_SIZE="1048576", **(env or {}), **extra)


def auth_env(reg, work: Path, user=None) -> dict[str, str]:
    if reg.auth == "none":
        return {}
    return {"DOCKER_CONFIG": str(reg.docker_config(work / "docker", user).parent)}


def test_seed_locks_and_verifies_from_every_kind_of_registry(any_registry, tmp_path):
    reg = any_registry
    digest = push(reg, "team/tiny:v1", modelpack(FILES), reg.credentials)
    oci_manifest(tmp_path, f"{reg.host}/team/tiny:v1")
    run = seed(tmp_path, env=auth_env(reg, tmp_path))
    assert run.code == 0, run
    for path, data in FILES.items():
        assert (tmp_path / "models" / "tiny" / path).read_bytes() == data
    lock = json.loads((tmp_path / "models.lock").read_text())["models"][0]
    assert lock["kind"] == "oci" and lock["oci"] == f"{reg.host}/team/tiny:v1" and lock["digest"] == digest
    assert {f["path"]: f["sha256"] for f in lock["files"]} == {p: sha256(d) for p, d in FILES.items()}
    assert run_seeder("verify", "--manifest", str(tmp_path / "models.toml"), "--target",
                      str(tmp_path / "models")).code == 0
    # The 3 MiB weight came in Range parts over several connections.
    ranged = [r for r in reg.requests() if r.method == "GET" and r.status == 206]
    assert len(ranged) >= 3, reg.requests()


def _tar(members: dict[str, bytes], compress: str = "") -> bytes:
    import gzip
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), 1700000000, 0o644
            tar.addfile(info, io.BytesIO(data))
    data = out.getvalue()
    return gzip.compress(data, mtime=0) if compress == "gzip" else data


def artifact(layers: list[tuple[str, bytes, dict]], config_type: str = "application/vnd.cncf.model.config.v1+json",
             config: bytes = b"{}", media_type: str = "application/vnd.oci.image.manifest.v1+json",
             artifact_type: str | None = "application/vnd.cncf.model.manifest.v1+json"):
    """A manifest of the given layers (media type, bytes, annotations), as other tools write them."""
    from tests.registry import Artifact, sha256_digest

    manifest = {"schemaVersion": 2, "mediaType": media_type,
                "config": {"mediaType": config_type, "digest": sha256_digest(config), "size": len(config)},
                "layers": [{"mediaType": t, "digest": sha256_digest(d), "size": len(d),
                            **({"annotations": a} if a else {})} for t, d, a in layers]}
    if artifact_type:
        manifest["artifactType"] = artifact_type
    return Artifact(json.dumps(manifest).encode(), config, {f"blob{i}": d for i, (_, d, _) in enumerate(layers)})


TAR_FILES = {"config.json": b'{"a": 1}\n', "weights/model.safetensors": blob(2 << 20, seed=2),
             "tokenizer/vocab.txt": b"a\nb\n"}


@pytest.mark.parametrize("media_type,compress", [
    ("application/vnd.cncf.model.weight.v1.tar", ""),              # modctl --raw=false
    ("application/vnd.cncf.model.weight.v1.tar+gzip", "gzip"),
    ("application/vnd.kitops.modelkit.model.v1.tar+gzip", "gzip"),  # a KitOps ModelKit
])
def test_tar_layers_are_unpacked_with_each_file_locked_and_verified(registry, tmp_path, media_type, compress):
    layer = _tar(TAR_FILES, compress)
    push(registry, "team/tarred:v1", artifact([(media_type, layer, {}),
                                               ("application/vnd.cncf.model.doc.v1.raw", b"# doc\n",
                                                {"org.cncf.model.filepath": "README.md"})]))
    oci_manifest(tmp_path, f"{registry.host}/team/tarred:v1")
    run = seed(tmp_path)
    assert run.code == 0, run
    root = tmp_path / "models" / "tiny"
    for path, data in {**TAR_FILES, "README.md": b"# doc\n"}.items():
        assert (root / path).read_bytes() == data
    lock = json.loads((tmp_path / "models.lock").read_text())["models"][0]
    from tests.registry import sha256_digest
    layers = {f["path"]: f.get("layer") for f in lock["files"]}
    assert layers == {**{p: sha256_digest(layer) for p in TAR_FILES}, "README.md": None}
    # Each unpacked file has its own sha256, which verify checks: one changed byte is named.
    (root / "tokenizer" / "vocab.txt").write_bytes(b"a\nc\n")
    bad = run_seeder("verify", "--manifest", str(tmp_path / "models.toml"), "--target", str(tmp_path / "models"))
    assert bad.code == 1 and "tokenizer/vocab.txt" in bad.err
    # No scratch directory or layer blob is left in the target.
    assert not [p for p in (tmp_path / "models" / ".seeder" / "tmp").iterdir()], list((tmp_path / "models" / ".seeder" / "tmp").iterdir())


def test_a_tar_layer_with_a_link_is_refused_naming_the_member(registry, tmp_path):
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("config.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
        link = tarfile.TarInfo("evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    push(registry, "team/evil:v1", artifact([("application/vnd.cncf.model.weight.v1.tar", out.getvalue(), {})]))
    oci_manifest(tmp_path, f"{registry.host}/team/evil:v1")
    run = seed(tmp_path)
    assert run.code == 1, run
    assert "evil" in run.err.splitlines()[-1]
    assert not (tmp_path / "models" / "tiny").exists()
    assert not (tmp_path / "models.lock").exists()


def test_an_artifact_oras_pushed_seeds(registry, tmp_path, monkeypatch):
    from tests.registry import oras_client

    src = tmp_path / "src"
    src.mkdir()
    files = {"model.gguf": blob(1 << 20, seed=3), "LICENSE": b"MIT\n"}
    for name, data in files.items():
        (src / name).write_bytes(data)
    monkeypatch.chdir(src)  # oras-py takes paths relative to where it runs
    resp = oras_client(registry).push(target=f"{registry.host}/team/oras:v1", files=list(files))
    assert resp.status_code == 201, resp.text
    oci_manifest(tmp_path, f"{registry.host}/team/oras:v1")
    run = seed(tmp_path)
    assert run.code == 0, run
    for name, data in files.items():
        assert (tmp_path / "models" / "tiny" / name).read_bytes() == data


def test_older_names_and_docker_model_runner_layers(registry, tmp_path):
    weights, license_ = blob(1 << 20, seed=4), b"Apache-2.0\n"
    # ModelPack before v0.0.7 (cnai names) with a nested path; Docker Model Runner's v0.1 layers carry no path.
    push(registry, "team/cnai:v1", artifact(
        [("application/vnd.cnai.model.weight.v1.raw", weights, {"org.cnai.model.filepath": "q4/model.gguf"})],
        config_type="application/vnd.cnai.model.config.v1+json"))
    push(registry, "team/dmr:v1", artifact(
        [("application/vnd.docker.ai.gguf.v3", weights, {}), ("application/vnd.docker.ai.license", license_, {})],
        config_type="application/vnd.docker.ai.model.config.v0.1+json", artifact_type=None))
    write_manifest(tmp_path / "models.toml", f'[[models]]\nname = "cnai"\noci = "{registry.host}/team/cnai:v1"\n'
                                             f'[[models]]\nname = "dmr"\noci = "{registry.host}/team/dmr:v1"\n')
    run = seed(tmp_path)
    assert run.code == 0, run
    assert (tmp_path / "models" / "cnai" / "q4" / "model.gguf").read_bytes() == weights
    assert (tmp_path / "models" / "dmr" / "model.gguf").read_bytes() == weights
    assert (tmp_path / "models" / "dmr" / "LICENSE").read_bytes() == license_


def test_include_and_exclude_apply_to_file_paths(registry, tmp_path):
    push(registry, "team/tiny:v1", modelpack(FILES))
    oci_manifest(tmp_path, f"{registry.host}/team/tiny:v1", 'include = ["*.json", "sub/*"]\nexclude = ["config.json"]\n')
    assert seed(tmp_path).code == 0
    got = sorted(str(p.relative_to(tmp_path / "models" / "tiny")) for p in (tmp_path / "models" / "tiny").rglob("*")
                 if p.is_file())
    assert got == ["sub/tokenizer.json"]


@pytest.mark.parametrize("value", ["team/tiny:v1", "tiny", "https://r.example.com/team/tiny:v1",
                                   "r.example.com/Team/tiny", "r.example.com/team/tiny@sha256:abc"])
def test_a_reference_that_names_no_registry_or_is_invalid_exits_2(tmp_path, value):
    oci_manifest(tmp_path, value)
    run = seed(tmp_path)
    assert run.code == 2, run
    assert "tiny" in run.err and repr(value) in run.err


def test_a_missing_repository_or_tag_exits_3_naming_it(registry, tmp_path):
    push(registry, "team/tiny:v1", modelpack(FILES))
    for ref in (f"{registry.host}/team/tiny:v2", f"{registry.host}/team/nothing:v1"):
        oci_manifest(tmp_path, ref)
        run = seed(tmp_path)
        assert run.code == 3, run
        assert ref in run.err.splitlines()[-1]


def test_an_index_or_an_unknown_manifest_is_a_clear_error(registry, tmp_path):
    from tests.registry import Artifact

    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": []}).encode()
    push(registry, "team/multi:v1", Artifact(index, b"{}", {}), content_type="application/vnd.oci.image.index.v1+json")
    oci_manifest(tmp_path, f"{registry.host}/team/multi:v1")
    run = seed(tmp_path)
    assert run.code == 3 and "image index" in run.err, run


def test_a_moved_tag_changes_nothing_until_refresh(registry, tmp_path):
    push(registry, "team/tiny:v1", modelpack(FILES))
    oci_manifest(tmp_path, f"{registry.host}/team/tiny:v1")
    assert seed(tmp_path).code == 0
    moved = {**FILES, "config.json": b'{"hidden_size": 16}\n'}
    new_digest = push(registry, "team/tiny:v1", modelpack(moved))
    (tmp_path / "models").rename(tmp_path / "old")
    assert seed(tmp_path).code == 0  # a fresh target, from the lock: the old manifest's blobs
    assert (tmp_path / "models" / "tiny" / "config.json").read_bytes() == FILES["config.json"]
    run = run_seeder("refresh", "--manifest", str(tmp_path / "models.toml"), "--target", str(tmp_path / "models"))
    assert run.code == 0, run
    assert (tmp_path / "models" / "tiny" / "config.json").read_bytes() == moved["config.json"]
    assert json.loads((tmp_path / "models.lock").read_text())["models"][0]["digest"] == new_digest


@pytest.mark.parametrize("any_registry", ["basic", "token"], indirect=True)
def test_refused_credentials_exit_3_in_one_line_without_the_secret(any_registry, tmp_path):
    reg = any_registry
    push(reg, "team/tiny:v1", modelpack(FILES), reg.credentials)
    oci_manifest(tmp_path, f"{reg.host}/team/tiny:v1")
    wrong = ("writer", "not-the-password-1234")
    run = seed(tmp_path, env={"REGISTRY_AUTH_FILE": str(reg.docker_config(tmp_path / "docker", wrong))})
    assert run.code == 3, run
    last = run.err.splitlines()[-1]
    assert reg.host in last and "team/tiny" in last and "refused" in last
    assert "not-the-password-1234" not in run.err + run.out
    import base64
    assert base64.b64encode(b"writer:not-the-password-1234").decode() not in run.err + run.out


def test_status_shows_the_tag_and_the_manifest_digest(registry, tmp_path):
    digest = push(registry, "team/tiny:v1", modelpack(FILES))
    oci_manifest(tmp_path, f"{registry.host}/team/tiny:v1")
    assert seed(tmp_path).code == 0
    run = run_seeder("status", "--manifest", str(tmp_path / "models.toml"), "--target", str(tmp_path / "models"))
    assert run.code == 0, run
    row = next(line.split() for line in run.out.splitlines() if line.startswith("tiny"))
    assert "v1" in row and digest.removeprefix("sha256:")[:12] in row


@pytest.mark.parametrize("token_registry", [{"anonymous": set()}], indirect=True)
def test_blobs_go_through_a_forward_proxy_with_their_ranges(token_registry, tmp_path):
    """The Dragonfly path: dfdaemon is an HTTP proxy that serves registry blob GETs from peers."""
    import threading
    from http.server import ThreadingHTTPServer

    from tests.test_proxy import _Forward

    reg = token_registry
    push(reg, "team/tiny:v1", modelpack(FILES), reg.credentials)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Forward)
    server.daemon_threads, server.seen = True, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        oci_manifest(tmp_path, f"{reg.host}/team/tiny:v1")
        url = f"http://127.0.0.1:{server.server_port}"
        run = seed(tmp_path, env=auth_env(reg, tmp_path), HTTP_PROXY=url, http_proxy=url)
    finally:
        server.shutdown()
    assert run.code == 0, run
    assert (tmp_path / "models" / "tiny" / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    blobs = [(path, rng) for _, path, rng in server.seen if "/blobs/" in path]
    assert sum(1 for _, rng in blobs if rng) >= 3, server.seen


def test_a_manifest_of_an_unknown_kind_is_named_not_guessed(registry, tmp_path):
    from tests.registry import Artifact

    # What a registry may hold under a tag that is no image manifest: here, a Docker manifest list.
    listing = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
                          "manifests": []}).encode()
    push(registry, "team/list:v1", Artifact(listing, b"{}", {}),
         content_type="application/vnd.docker.distribution.manifest.list.v2+json")
    oci_manifest(tmp_path, f"{registry.host}/team/list:v1")
    run = seed(tmp_path)
    assert run.code == 3 and "image index" in run.err.splitlines()[-1], run
    # distribution stores no manifest of a media type it does not know; other registries do (an artifact
    # manifest, a future type): one that answers with such a manifest, and one with no layers.
    answers = {"/v2/team/weird/manifests/v1": ("application/vnd.example.thing.v1+json",
                                               {"schemaVersion": 2, "mediaType": "application/vnd.example.thing.v1+json"}),
               "/v2/team/empty/manifests/v1": ("application/vnd.oci.image.manifest.v1+json",
                                               {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                                           "digest": "sha256:" + "4" * 64, "size": 2}, "layers": []})}
    with static_registry(answers) as host:
        for name, expected in (("weird", "application/vnd.example.thing.v1+json"), ("empty", "has no layers")):
            oci_manifest(tmp_path, f"{host}/team/{name}:v1")
            run = seed(tmp_path)
            assert run.code == 3 and expected in run.err.splitlines()[-1], run


@contextlib.contextmanager
def static_registry(answers: dict[str, tuple[str, dict]]):
    """A registry that answers manifest GETs from ``answers`` (path -> (media type, JSON)) and 404 otherwise."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a) -> None:
            pass

        def do_GET(self) -> None:
            media_type, body = answers.get(self.path, ("application/json", {"errors": [{"code": "NAME_UNKNOWN"}]}))
            data = json.dumps(body).encode()
            self.send_response(200 if self.path in answers else 404)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_a_file_where_another_layer_puts_a_directory_is_refused_when_locking(registry, tmp_path):
    push(registry, "team/clash:v1", artifact([
        ("application/vnd.cncf.model.weight.v1.raw", b"a file", {"org.cncf.model.filepath": "weights"}),
        ("application/vnd.cncf.model.weight.v1.raw", b"another", {"org.cncf.model.filepath": "weights/part-1"})]))
    oci_manifest(tmp_path, f"{registry.host}/team/clash:v1")
    run = seed(tmp_path)
    assert run.code == 3 and "'weights'" in run.err.splitlines()[-1], run
    assert not (tmp_path / "models.lock").exists()
