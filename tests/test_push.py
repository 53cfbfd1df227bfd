"""``seeder push``: a target seeded from the (fake) hub, published to real registries (tests/registry.py) as
ModelPack v1 artifacts that oras-py pulls, skopeo copies with their digests, and seeder seeds from with
``--locked``; pushing again sends nothing; a push killed or failed mid-upload completes when run again.

The config seeder writes is checked against CONFIG_SCHEMA: the rules of model-spec's config schema
(github.com/modelpack/model-spec, docs/config.md and schema/config-schema.json) written out here: three
required objects, no property the spec does not name at any level, the types it gives each.
"""

from __future__ import annotations

import http.client
import shutil
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import ROOT, blob, file_sha256, run_seeder, seeder_env, sha256, write_manifest
from tests.registry import (  # noqa: F401  (fixtures)
    Registry,
    make_registry,
    oras_client,
    registry,
    sha256_digest,
    skopeo,
    token_registry,
)
from tests.registryfaults import RegistryFaultProxy
from tests.tokenserver import READER, WRITER

pytestmark = pytest.mark.registry

_STRINGS = {"type": "array", "items": {"type": "string"}}
_MODALITIES = {"type": "array", "items": {"enum": ["text", "image", "audio", "video", "embedding", "other"]}}
CONFIG_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object", "required": ["descriptor", "config", "modelfs"], "additionalProperties": False,
    "properties": {
        "descriptor": {"type": "object", "additionalProperties": False, "properties": {
            **{key: {"type": "string"} for key in ("family", "docURL", "sourceURL", "version", "revision", "vendor",
                                                  "title", "description")},
            "name": {"type": "string", "minLength": 1}, "createdAt": {"type": "string", "format": "date-time"},
            "authors": _STRINGS, "datasetsURL": _STRINGS, "licenses": _STRINGS}},
        "config": {"type": "object", "additionalProperties": False, "properties": {
            **{key: {"type": "string"} for key in ("architecture", "format", "paramSize", "precision", "quantization")},
            "capabilities": {"type": "object", "additionalProperties": False, "properties": {
                "inputTypes": _MODALITIES, "outputTypes": _MODALITIES,
                "knowledgeCutoff": {"type": "string", "format": "date-time"},
                "reasoning": {"type": "boolean"}, "toolUsage": {"type": "boolean"}, "reward": {"type": "boolean"},
                "languages": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{2}$"}}}}}},
        "modelfs": {"type": "object", "required": ["type", "diffIds"], "additionalProperties": False, "properties": {
            "type": {"enum": ["layers"]}, "diffIds": {"type": "array", "items": {"type": "string"}, "minItems": 1}}},
    },
}
WEIGHTS = blob(3 << 20, seed=7)  # LFS on the hub: locked by sha256; pushed in 1 MiB chunks
TINY = {"config.json": b'{"hidden_size": 8}\n', "tokenizer.json": b'{"v": 1}\n', "README.md": b"# tiny\n",
        "sub/vocab.txt": b"[PAD]\nhello\n", "modeling_tiny.py": b"print('hi')\n", "model.safetensors": WEIGHTS}
EMBED = {"config.json": TINY["config.json"], "model.safetensors": blob(200_000, seed=8)}  # one blob shared
CHUNK = "1M"
MIB = 1 << 20
ROLES = {"config.json": "weight.config", "tokenizer.json": "weight.config", "README.md": "doc",
         "sub/vocab.txt": "weight.config", "modeling_tiny.py": "code", "model.safetensors": "weight",
         ".gitattributes": "weight.config"}


@pytest.fixture(autouse=True)
def no_developer_credentials(tmp_path: Path, monkeypatch):
    """oras-py and seeder read ~/.docker/config.json unless told otherwise: give both an empty home."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE"):
        monkeypatch.delenv(name, raising=False)


def seed(hub, work: Path, layout: str = "plain", *, add: bool = True) -> dict[str, dict[str, bytes]]:
    """A target at work/models with the models tiny and embed, seeded from the fake hub (``add``: commit their
    repos first; a second commit of the same files is another commit); their files."""
    if add:
        hub.add_repo("org/tiny", TINY)
        hub.add_repo("org/embed", EMBED)
    head = 'layout = "hf-cache"\n' if layout == "hf-cache" else ""
    write_manifest(work / "models.toml", f'{head}[[models]]\nname = "tiny"\nrepo = "org/tiny"\n\n'
                   '[[models]]\nname = "embed"\nrepo = "org/embed"\n')
    run = run_seeder("-m", str(work / "models.toml"), "-t", str(work / "models"), hub=hub)
    assert run.code == 0, run
    lock = json.loads((work / "models.lock").read_text())["models"]
    tiny = {f["path"]: f for f in lock[0]["files"]}
    assert "git_oid" in tiny["config.json"] and "sha256" not in tiny["config.json"]  # hashed by push
    assert tiny["model.safetensors"]["sha256"] == sha256(WEIGHTS)
    files = {"tiny": dict(TINY), "embed": dict(EMBED)}
    gitattributes = next(p for p in (work / "models").rglob(".gitattributes"))
    for name in files:
        files[name][".gitattributes"] = gitattributes.read_bytes()
    return files


def push(reg_host: str, work: Path, *args: str, hub=None, env: dict[str, str] | None = None, **extra):
    return run_seeder("push", f"{reg_host}/team", "--tag", "v1", "-m", str(work / "models.toml"),
                      "-t", str(work / "models"), *args, hub=hub, SEEDER_PUSH_CHUNK=CHUNK, **(env or {}), **extra)


def pushed(run) -> dict[str, str]:
    """The references push printed, by model: one line each, ``<name> <reference>@<digest>``."""
    lines = [line.split(" ") for line in run.out.splitlines()]
    assert all(len(parts) == 2 for parts in lines), run.out
    return dict(lines)


def get(host: str, path: str, accept: str = "application/vnd.oci.image.manifest.v1+json") -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", int(host.rpartition(":")[2]), timeout=10)
    try:
        conn.request("GET", path, headers={"Accept": accept})
        resp = conn.getresponse()
        assert resp.status == 200, (path, resp.status)
        return resp.read()
    finally:
        conn.close()


def has_blob(reg: Registry, repository: str, digest: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=10)
    try:
        conn.request("HEAD", f"/v2/{repository}/blobs/{digest}")
        return conn.getresponse().status == 200
    finally:
        conn.close()


def check_pulled(reg: Registry, reference: str, files: dict[str, bytes], out: Path) -> None:
    """oras-py pulls the artifact and places each file by its title, bytes as seeded."""
    got = oras_client(reg).pull(target=reference, outdir=str(out))
    assert sorted(Path(p).relative_to(out).as_posix() for p in got) == sorted(files)
    assert {p: file_sha256(out / p) for p in files} == {p: sha256(d) for p, d in files.items()}


def uploads(reg: Registry, since: int = 0) -> list:
    return [r for r in reg.requests()[since:] if r.method in ("PUT", "PATCH", "POST") and "/blobs/" in r.path]


# -- the artifact ------------------------------------------------------------------------------------------


def test_a_pushed_model_is_a_modelpack_artifact_oras_pulls_and_skopeo_copies(registry, make_registry, hub, tmp_path):
    reg = registry
    files = seed(hub, tmp_path)
    run = push(reg.host, tmp_path)
    assert run.code == 0, run
    refs = pushed(run)
    assert list(refs) == ["tiny", "embed"]
    assert re.fullmatch(rf"{re.escape(reg.host)}/team/tiny:v1@sha256:[0-9a-f]{{64}}", refs["tiny"])
    digest = refs["tiny"].split("@")[1]

    raw = get(reg.host, f"/v2/team/tiny/manifests/{digest}")
    assert sha256_digest(raw) == digest
    manifest = json.loads(raw)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    layers = {layer["annotations"]["org.cncf.model.filepath"]: layer for layer in manifest["layers"]}
    assert set(layers) == set(files["tiny"])
    for path, layer in layers.items():
        data = files["tiny"][path]
        assert layer["digest"] == sha256_digest(data) and layer["size"] == len(data)  # the file's own sha256
        assert layer["mediaType"] == f"application/vnd.cncf.model.{ROLES[path]}.v1.raw"
        assert layer["annotations"]["org.opencontainers.image.title"] == path
        meta = json.loads(layer["annotations"]["org.cncf.model.file.metadata+json"])
        assert meta["name"] == path.rsplit("/", 1)[-1] and meta["size"] == len(data) and meta["typeflag"] == 48
    assert layers[".gitattributes"]["annotations"]["org.cncf.model.file.mediatype.untested"] == "true"

    config = json.loads(get(reg.host, f"/v2/team/tiny/blobs/{manifest['config']['digest']}", "*/*"))
    jsonschema.Draft202012Validator(CONFIG_SCHEMA, format_checker=jsonschema.FormatChecker()).validate(config)
    assert config["modelfs"]["diffIds"] == [layer["digest"] for layer in manifest["layers"]]
    assert config["descriptor"]["name"] == "tiny" and config["config"] == {"format": "safetensors"}
    assert config["descriptor"]["sourceURL"].endswith("/org/tiny") and len(config["descriptor"]["revision"]) == 40

    check_pulled(reg, f"{reg.host}/team/tiny:v1", files["tiny"], tmp_path / "oras")
    home = tmp_path / "skopeo"
    inspect = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{reg.host}/team/tiny:v1", home=home)
    assert inspect.returncode == 0 and json.loads(inspect.stdout)["artifactType"] == manifest["artifactType"]
    other = make_registry()
    copy = skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{reg.host}/team/tiny:v1",
                  f"docker://{other.host}/mirror/tiny:v1", home=home)
    assert copy.returncode == 0, copy.stderr
    assert sha256_digest(get(other.host, "/v2/mirror/tiny/manifests/v1")) == digest

    # The 3 MiB weights went up in 1 MiB chunks; what embed shares with tiny was mounted from team/tiny, not sent.
    weights = [r for r in reg.requests() if r.method == "PATCH" and r.path.startswith("/v2/team/tiny/")]
    assert len(weights) == 3, reg.requests()
    mounts = {(r.path.split("?")[0], re.search(r"mount=([^&]+)", r.path)[1].replace("%3A", ":"),
               re.search(r"from=([^&]+)", r.path)[1], r.status) for r in reg.requests() if "mount=" in r.path}
    shared = {sha256_digest(files["embed"][p]) for p in ("config.json", ".gitattributes")}
    assert mounts == {("/v2/team/embed/blobs/uploads/", d, "team%2Ftiny", 201) for d in shared}
    assert not [r for r in uploads(reg) if r.method == "PUT" and any(d.replace(":", "%3A") in r.path for d in shared)
                and "/team/embed/" in r.path]


def test_pushing_again_uploads_nothing_and_gives_the_same_digests(registry, hub, tmp_path):
    reg = registry
    seed(hub, tmp_path)
    first = push(reg.host, tmp_path)
    assert first.code == 0, first
    before = len(reg.requests())
    again = push(reg.host, tmp_path)
    assert again.code == 0, again
    assert pushed(again) == pushed(first)
    new = reg.requests()[before:]
    assert uploads(reg, before) == []
    assert {r.method for r in new} == {"HEAD", "PUT"} and all("/manifests/" in r.path for r in new if r.method == "PUT")
    summary = next(e for e in again.events if e["event"] == "push")
    assert summary["uploaded"] == 0 and summary["blobs_uploaded"] == 0 and summary["blobs_present"] == 12

    # Without a manifest, what the target records is pushed: the same models, the same artifacts.
    (tmp_path / "models.toml").rename(tmp_path / "elsewhere.toml")
    alone = push(reg.host, tmp_path)
    assert alone.code == 0 and pushed(alone) == pushed(first), alone


def test_an_hf_cache_target_pushes_the_same_artifacts(registry, hub, tmp_path):
    plain, cached = tmp_path / "plain", tmp_path / "cached"
    plain.mkdir()
    cached.mkdir()
    seed(hub, plain)
    seed(hub, cached, layout="hf-cache", add=False)
    assert (cached / "models" / "hub" / "models--org--tiny").is_dir()
    one = push(registry.host, plain)
    other = push(registry.host, cached)
    assert one.code == 0 and other.code == 0, (one, other)
    assert pushed(other) == pushed(one)  # same files, same sources: the same manifest, byte for byte
    summary = next(e for e in other.events if e["event"] == "push")
    assert summary["uploaded"] == 0


def test_write_manifest_seeds_a_fresh_target_from_the_registry_alone(registry, hub, tmp_path):
    reg = registry
    files = seed(hub, tmp_path)
    out = tmp_path / "airgap" / "models.toml"
    out.parent.mkdir()
    run = push(reg.host, tmp_path, "--write-manifest", str(out))
    assert run.code == 0, run
    refs = pushed(run)
    text = out.read_text()
    assert all(f'oci = "{ref}"' in text for ref in refs.values())

    # The lock is what `seeder lock` makes of that manifest, entry for entry.
    relock = tmp_path / "relock"
    relock.mkdir()
    (relock / "models.toml").write_text(text)
    locked = run_seeder("lock", "-m", str(relock / "models.toml"), "-t", str(relock / "models"))
    assert locked.code == 0, locked
    assert json.loads((out.parent / "models.lock").read_text()) == json.loads((relock / "models.lock").read_text())

    # No hub: the registry is the only source, and --locked resolves nothing.
    fresh = tmp_path / "fresh"
    seeded = run_seeder("--locked", "-m", str(out), "-t", str(fresh))
    assert seeded.code == 0, seeded
    assert run_seeder("verify", "-m", str(out), "-t", str(fresh)).code == 0
    for name, contents in files.items():
        assert {p: (fresh / name / p).read_bytes() for p in contents} == contents


# -- refusals ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token_registry", [{"anonymous": set()}], indirect=True)
def test_writer_credentials_push_and_reader_credentials_are_refused_in_one_line(token_registry, hub, tmp_path):
    reg = token_registry
    seed(hub, tmp_path)
    reader = {"DOCKER_CONFIG": str(reg.docker_config(tmp_path / "reader", READER).parent)}
    refused = push(reg.host, tmp_path, env=reader)
    assert refused.code == 3, refused
    assert refused.out == ""
    last = refused.events[-1]["event"]
    assert last == (f"registry {reg.host} refused access to team/tiny: credentials from "
                    f"{tmp_path / 'reader' / 'config.json'} were refused"), last
    leaked = any(secret in refused.err + refused.out for secret in (READER[1], WRITER[1], "eyJ"))
    assert not leaked, "a password or token in seeder's output"

    writer = {"DOCKER_CONFIG": str(reg.docker_config(tmp_path / "writer", WRITER).parent)}
    run = push(reg.host, tmp_path, env=writer)
    assert run.code == 0, run
    config = reg.docker_config(tmp_path / "oras", WRITER)
    out = tmp_path / "pulled"
    got = oras_client(reg).pull(target=pushed(run)["embed"], outdir=str(out), config_path=str(config))
    assert sorted(Path(p).name for p in got) == [".gitattributes", "config.json", "model.safetensors"]
    # With tokens too, what embed shares with tiny is mounted (its token reads team/tiny as well), not sent.
    mounts = [r for r in reg.requests() if "mount=" in r.path and r.status != 401]
    assert len(mounts) == 2 and all(r.status == 201 for r in mounts), mounts


def test_a_target_not_completely_seeded_is_refused_before_any_request(registry, hub, tmp_path):
    seed(hub, tmp_path)
    (tmp_path / "models" / "tiny" / "README.md").unlink()
    run = push(registry.host, tmp_path)
    assert run.code == 1, run
    assert "is not completely seeded (tiny/README.md: missing); run seeder first" in run.events[-1]["event"]
    assert run.out == "" and registry.requests() == []
    # The same files in a directory seeder did not write (no state to say they are complete): refused too.
    shutil.rmtree(tmp_path / "models" / ".seeder")
    run = push(registry.host, tmp_path)
    assert run.code == 1 and "was not seeded by seeder" in run.events[-1]["event"], run
    assert registry.requests() == []


@pytest.mark.parametrize("args, why", [
    (["team"], "'team' is not REGISTRY/NAMESPACE"), (["127.0.0.1:5000/team:v1"], "is not REGISTRY/NAMESPACE"),
    (["127.0.0.1:5000/Team"], "is not REGISTRY/NAMESPACE"), (["127.0.0.1:5000/team", "--tag", ".v1"], "is not a tag"),
    (["127.0.0.1:5000/team", "--write-manifest", "nowhere/models.toml"], "no directory nowhere")])
def test_a_destination_tag_or_output_seeder_cannot_use_exits_2(args, why, tmp_path):
    run = run_seeder("push", *args, "-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "models"),
                     cwd=tmp_path)
    assert run.code == 2 and why in run.events[-1]["event"], run


def test_a_model_name_no_registry_takes_exits_2_before_any_request(registry, hub, tmp_path):
    hub.add_repo("org/tiny", {"config.json": b"{}"})
    write_manifest(tmp_path / "models.toml", '[[models]]\nname = "Tiny"\nrepo = "org/tiny"\n')
    assert run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "models"), hub=hub).code == 0
    run = push(registry.host, tmp_path)
    assert run.code == 2 and run.events[-1]["event"].startswith("model 'Tiny': not a repository name"), run
    assert registry.requests() == []


def test_an_unreachable_registry_exits_3_in_one_line(hub, tmp_path):
    from tests.processes import free_port

    seed(hub, tmp_path)
    host = f"127.0.0.1:{free_port()}"
    run = push(host, tmp_path)
    assert run.code == 3, run
    assert re.fullmatch(rf"tiny: sha256:[0-9a-f]{{64}}: connection refused by {host} \(gave up after 4 attempts\)",
                        run.events[-1]["event"]), run


def test_a_file_changed_on_disk_is_an_integrity_error_naming_it(registry, hub, tmp_path):
    seed(hub, tmp_path)
    config = tmp_path / "models" / "embed" / "config.json"  # known by its git blob id: hashed before any request
    config.unlink()  # a new file: the old one is a hardlink of tiny's, the same bytes
    config.write_bytes(b'{"hidden_size": 9}\n')  # the same size: verify --fast would not tell
    run = push(registry.host, tmp_path)
    assert run.code == 1 and "embed/config.json does not match its lock" in run.events[-1]["event"], run
    assert registry.requests() == []
    config.unlink()
    config.write_bytes(TINY["config.json"])

    weights = tmp_path / "models" / "tiny" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # locked by sha256: only the registry's digest check can tell
    os.chmod(weights, 0o644)
    weights.write_bytes(bytes(data))
    run = push(registry.host, tmp_path)
    assert run.code == 1, run
    event = run.events[-1]["event"]
    assert event.startswith("tiny/model.safetensors: ") and f"not sha256:{sha256(WEIGHTS)}" in event, event
    # Sent twice before the file is blamed: a chunk cut short may have left bytes in the first session.
    digest_invalid = [r for r in registry.requests() if r.method == "PUT" and r.status == 400]
    assert len(digest_invalid) == 2 and len([r for r in registry.requests() if r.method == "PATCH"]) == 6


# -- faults ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("failpoint", ["push-blob", "push-chunk"])
def test_a_push_killed_midway_completes_uploading_only_what_was_missing(failpoint, registry, hub, tmp_path):
    reg = registry
    files = seed(hub, tmp_path)
    env = seeder_env(None, SEEDER_PUSH_CHUNK=CHUNK, SEEDER_FAILPOINT=failpoint)
    proc = subprocess.Popen([sys.executable, "-m", "seeder", "push", f"{reg.host}/team", "--tag", "v1", "--jobs", "1",
                             "-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "models"),
                             "--log-format", "json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for line in proc.stderr:
            if line.strip() == f"failpoint {failpoint}":
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    files_of = {name: {sha256_digest(d) for d in files[name].values()} for name in files}
    there = {name: {d for d in files_of[name] if has_blob(reg, f"team/{name}", d)} for name in files}
    # --jobs 1 goes file by file in path order: .gitattributes, README.md, config.json, model.safetensors, ...
    assert len(there["tiny"]) == (1 if failpoint == "push-blob" else 3) and not there["embed"], there
    before = len(reg.requests())
    run = push(reg.host, tmp_path)
    assert run.code == 0, run
    sent = {re.search(r"digest=(sha256%3A[0-9a-f]{64})", r.path)[1].replace("%3A", ":")
            for r in uploads(reg, before) if r.method == "PUT"}
    blobs = {}
    for name, reference in pushed(run).items():
        manifest = json.loads(get(reg.host, f"/v2/team/{name}/manifests/{reference.split('@')[1]}"))
        blobs[name] = {layer["digest"] for layer in manifest["layers"]} | {manifest["config"]["digest"]}
    # Only what the killed run had not sent goes up; embed mounts what it shares with tiny.
    assert sent == (blobs["tiny"] - there["tiny"]) | (blobs["embed"] - blobs["tiny"])
    check_pulled(reg, f"{reg.host}/team/tiny:v1", files["tiny"], tmp_path / "oras")


@pytest.mark.parametrize("nth", [1, 2])
def test_a_5xx_mid_upload_resumes_from_the_offset_the_registry_reports(nth, registry, hub, tmp_path):
    files = seed(hub, tmp_path)
    with RegistryFaultProxy(registry.port) as proxy:
        proxy.fault("PATCH", r"/v2/team/tiny/blobs/uploads/", nth, status=500)
        run = push(proxy.host, tmp_path)
        assert run.code == 0, run
        patches = [(rng, outcome) for method, _, rng, outcome in proxy.log if method == "PATCH"]
    done = [f"{i * MIB}-{(i + 1) * MIB - 1}" for i in range(3)]
    # The failed chunk is sent again from where the registry stood, then the rest: nothing twice, nothing lost.
    before, again = done[:nth - 1], done[nth - 1:]
    assert patches == [(rng, 202) for rng in before] + [(done[nth - 1], 500)] + [(rng, 202) for rng in again]
    check_pulled(registry, f"{registry.host}/team/tiny:v1", files["tiny"], tmp_path / "oras")


def test_a_connection_cut_mid_chunk_completes_and_the_artifact_verifies(registry, hub, tmp_path):
    """The line drops 300 kB into the second 1 MiB chunk of the weights, after the registry read some of it."""
    files = seed(hub, tmp_path)
    with RegistryFaultProxy(registry.port) as proxy:
        proxy.fault("PATCH", r"/v2/team/tiny/blobs/uploads/", 2, cut_after=300_000)
        run = push(proxy.host, tmp_path)
        assert run.code == 0, run
        ranges = [(rng, outcome) for method, path, rng, outcome in proxy.log if method == "PATCH"]
    # Whether distribution read part of the cut chunk before the reset is a race. If it did, it ends the session
    # and the weights start over; if not, the chunk goes again where it was.
    chunk = [f"{i * MIB}-{(i + 1) * MIB - 1}" for i in range(3)]
    assert ranges[:2] == [(chunk[0], 202), (chunk[1], "cut")], ranges
    assert ranges[2:] in ([(chunk[1], 202), (chunk[2], 202)], [(chunk[1], 404)] + [(c, 202) for c in chunk]), ranges
    fresh = tmp_path / "fresh"
    reference = pushed(run)["tiny"].replace(proxy.host, registry.host)
    manifest = write_manifest(tmp_path / "oci.toml", f'[[models]]\nname = "tiny"\noci = "{reference}"\n')
    assert run_seeder("-m", str(manifest), "-t", str(fresh)).code == 0
    assert {p: (fresh / "tiny" / p).read_bytes() for p in files["tiny"]} == files["tiny"]


def test_a_manifest_the_registry_finds_too_large_names_the_model_and_the_limit(registry, hub, tmp_path):
    seed(hub, tmp_path)
    with RegistryFaultProxy(registry.port) as proxy:
        proxy.fault("PUT", r"/manifests/", 1, status=413)
        run = push(proxy.host, tmp_path)
    assert run.code == 3, run
    event = run.events[-1]["event"]
    assert re.fullmatch(rf"tiny: {re.escape(proxy.host)} refused the manifest \(7 layers, \d+ bytes\): too large "
                        r"for this registry \(HTTP 413\); fewer files per model would fit", event), event
    assert run.out == ""


def test_a_manifest_over_what_registries_serve_is_refused_before_any_upload(registry, hub, tmp_path, monkeypatch):
    from seeder.commands import push as command
    from seeder.store import Target

    seed(hub, tmp_path)
    target = Target(tmp_path / "models")
    model = target.read_state()["tiny"].model
    assert command.prepare(target, model, "team/tiny", "https://huggingface.co").manifest
    monkeypatch.setattr(command, "MANIFEST_MAX", 2000)
    with pytest.raises(command.RemoteError, match=r"^tiny: its manifest would be [\d.]+ KiB \(7 layers\), over the "
                                                  r"2\.0 KiB registries serve; fewer files per model would fit$"):
        command.prepare(target, model, "team/tiny", "https://huggingface.co")


def test_a_file_push_cannot_read_is_a_storage_error_naming_it(registry, hub, tmp_path):
    """Exit 4 at once, not network retries: the registry did nothing wrong. As root, the command runs without
    the capabilities that pass permission bits (util-linux's setpriv) so that the file's mode binds it."""
    import subprocess
    import sys

    from tests.conftest import Run, seeder_env

    caps = "-dac_override,-dac_read_search,-fowner"
    setpriv = shutil.which("setpriv")
    assert os.geteuid() != 0 or setpriv, "as root, this test needs util-linux's setpriv"
    unprivileged = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"] if os.geteuid() == 0 else []

    seed(hub, tmp_path)
    weights = (tmp_path / "models" / "tiny" / "model.safetensors").resolve()
    weights.chmod(0)
    try:
        proc = subprocess.run([*unprivileged, sys.executable, "-m", "seeder", "push", f"{registry.host}/team",
                               "-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "models"), "--log-format",
                               "json"], env=seeder_env(hub.url, SEEDER_PUSH_CHUNK=CHUNK), capture_output=True,
                              text=True, timeout=120)
    finally:
        weights.chmod(0o444)
    run = Run(proc)
    assert run.code == 4, run
    assert "model.safetensors" in run.events[-1]["event"] and "permission denied" in run.events[-1]["event"], run
    assert "retrying" not in run.err
