"""The ``oci`` source against real registries (tests/registry.py: distribution 2.8, open, Basic and Bearer):
locking pins the manifest digest and every file, seeding fetches blobs through the Range engine and
verifies them, a moved tag changes nothing until ``seeder refresh``, references and refusals give one line.
"""

from __future__ import annotations

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
