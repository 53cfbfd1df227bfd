"""Registry credentials as Docker and podman users have them, against real registries (Basic and Bearer):
``REGISTRY_AUTH_FILE``, ``$DOCKER_CONFIG/config.json``, ``~/.docker/config.json``, ``credHelpers`` and
``credsStore`` through a real ``docker-credential-*`` program; refusals in one line with no secret.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from tests.conftest import run_seeder, write_manifest
from tests.registry import (  # noqa: F401  (fixtures)
    any_registry,
    basic_registry,
    make_registry,
    modelpack,
    push,
    token_registry,
    write_docker_config,
)

pytestmark = pytest.mark.registry

FILES = {"config.json": b"{}\n", "model.safetensors": b"w" * 4096}
WRONG = ("writer", "wrong-password-5678")


def setup(reg, work: Path) -> list[str]:
    push(reg, "team/m:v1", modelpack(FILES), reg.credentials)
    write_manifest(work / "models.toml", f'[[models]]\nname = "m"\noci = "{reg.host}/team/m:v1"\n')
    return ["--manifest", str(work / "models.toml"), "--target", str(work / "models")]


def helper(bin_dir: Path, name: str, user: tuple[str, str] | None, log: Path) -> None:
    """A real credential helper program: reads the host on stdin, answers as docker-credential-* do."""
    bin_dir.mkdir(exist_ok=True)
    answer = json.dumps({"ServerURL": "", "Username": user[0], "Secret": user[1]}) if user else ""
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f"#!/bin/sh\n[ \"$1\" = get ] || exit 1\ncat >> {log}\necho >> {log}\n"
                      + (f"echo '{answer}'\n" if user else "echo 'credentials not found in native keychain'\nexit 1\n"))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def raw_config(work: Path, config: dict) -> Path:
    """A Docker config.json of exactly ``config``, in a directory of its own: the DOCKER_CONFIG value."""
    path = work / "docker" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(config))
    return path.parent


def with_path(bin_dir: Path) -> str:
    return f"{bin_dir}:{os.environ['PATH']}"


@pytest.mark.parametrize("any_registry", ["basic", "token"], indirect=True)
@pytest.mark.parametrize("key", ["credHelpers", "credsStore"])
def test_credential_helpers_are_asked_for_the_host(any_registry, tmp_path, key):
    reg = any_registry
    argv = setup(reg, tmp_path)
    log = tmp_path / "asked"
    helper(tmp_path / "bin", "seedertest", reg.credentials, log)
    config = raw_config(tmp_path, {key: {reg.host: "seedertest"}} if key == "credHelpers" else {key: "seedertest"})
    run = run_seeder(*argv, DOCKER_CONFIG=str(config), PATH=with_path(tmp_path / "bin"))
    assert run.code == 0, run
    assert reg.host in log.read_text().split()
    assert reg.credentials[1] not in run.err + run.out


def test_registry_auth_file_comes_before_docker_config(basic_registry, tmp_path):
    reg = basic_registry
    argv = setup(reg, tmp_path)
    good = reg.docker_config(tmp_path / "podman")
    wrong = reg.docker_config(tmp_path / "docker", WRONG)
    assert run_seeder(*argv, REGISTRY_AUTH_FILE=str(good), DOCKER_CONFIG=str(wrong.parent)).code == 0
    (tmp_path / "models").rename(tmp_path / "first")
    run = run_seeder(*argv, REGISTRY_AUTH_FILE=str(wrong), DOCKER_CONFIG=str(good.parent))
    assert run.code == 3 and str(wrong) in run.err.splitlines()[-1], run


def test_home_docker_config_when_nothing_else_is_set(basic_registry, tmp_path):
    reg = basic_registry
    argv = setup(reg, tmp_path)
    home = tmp_path / "home"
    # Docker's own form of the host key, with the scheme.
    write_docker_config(home / ".docker", {f"https://{reg.host}": reg.credentials})
    run = run_seeder(*argv, HOME=str(home))
    assert run.code == 0, run


@pytest.mark.parametrize("token_registry", [{"anonymous": set()}], indirect=True)
def test_anonymous_access_refused_says_to_log_in(token_registry, tmp_path):
    argv = setup(token_registry, tmp_path)
    run = run_seeder(*argv, HOME=str(tmp_path / "nohome"))
    assert run.code == 3, run
    last = run.err.splitlines()[-1]
    assert token_registry.host in last and "team/m" in last and "log in" in last


def test_a_helper_that_fails_is_a_clear_usage_error(basic_registry, tmp_path):
    reg = basic_registry
    argv = setup(reg, tmp_path)
    run = run_seeder(*argv, DOCKER_CONFIG=str(raw_config(tmp_path, {"credHelpers": {reg.host: "absent"}})))
    assert run.code == 2 and "docker-credential-absent is not installed" in run.err, run


def test_a_malformed_auth_entry_is_named_without_its_value(basic_registry, tmp_path):
    reg = basic_registry
    argv = setup(reg, tmp_path)
    config = raw_config(tmp_path, {"auths": {reg.host: {"auth": "%%%not-base64-secret%%%"}}})
    run = run_seeder(*argv, DOCKER_CONFIG=str(config))
    assert run.code == 2 and str(config / "config.json") in run.err and "not-base64-secret" not in run.err, run


def test_no_secret_reaches_the_lock_state_or_logs(any_registry, tmp_path):
    reg = any_registry
    argv = setup(reg, tmp_path)
    config = reg.docker_config(tmp_path / "docker")
    run = run_seeder(*argv, "-v", DOCKER_CONFIG=str(config.parent))
    assert run.code == 0, run
    if reg.credentials:
        secrets = [reg.credentials[1], base64.b64encode(":".join(reg.credentials).encode()).decode()]
        written = run.err + run.out + "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*")
                                              if p.is_file() and "docker" not in p.parts and p.stat().st_size < 1 << 20)
        assert not [s for s in secrets if s in written]
        if reg.auth == "token":
            issued = [r for r in reg.tokens.requests if r.status == 200]
            assert issued and "Bearer" not in run.err


def test_an_image_pull_secret_mounted_as_kubelet_lays_it_out(basic_registry, tmp_path):
    """deploy/kubernetes/components/registry-credentials: the Secret's .dockerconfigjson as config.json in a
    directory of its own, REGISTRY_AUTH_FILE naming it; kubelet makes the file a symlink into ..data."""
    reg = basic_registry
    argv = setup(reg, tmp_path)
    mount = tmp_path / "var-run-secrets-registry"
    stamped = mount / "..2026_12_07_05_00_00.000000001"
    stamped.mkdir(parents=True)
    user, password = reg.credentials
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (stamped / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
    (mount / "..data").symlink_to(stamped.name)
    (mount / "config.json").symlink_to("..data/config.json")
    run = run_seeder(*argv, REGISTRY_AUTH_FILE=str(mount / "config.json"))
    assert run.code == 0, run
    # Optional in the pod spec: without the Secret the file is absent, which is no credentials, not an error.
    (tmp_path / "models").rename(tmp_path / "first")
    absent = run_seeder(*argv, REGISTRY_AUTH_FILE=str(tmp_path / "no-secret" / "config.json"),
                        HOME=str(tmp_path / "nohome"))
    assert absent.code == 3 and "log in" in absent.err.splitlines()[-1], absent


def test_podman_auth_json_where_podman_login_writes_it(basic_registry, tmp_path):
    reg = basic_registry
    argv = setup(reg, tmp_path)
    home, runtime = tmp_path / "home", tmp_path / "run-user"
    write_docker_config(home / ".config" / "containers", {reg.host: reg.credentials})
    (home / ".config" / "containers" / "config.json").rename(home / ".config" / "containers" / "auth.json")
    assert run_seeder(*argv, HOME=str(home)).code == 0
    # $XDG_RUNTIME_DIR/containers/auth.json (podman login's default) comes first.
    (tmp_path / "models").rename(tmp_path / "first")
    write_docker_config(runtime / "containers", {reg.host: WRONG})
    (runtime / "containers" / "config.json").rename(runtime / "containers" / "auth.json")
    run = run_seeder(*argv, HOME=str(home), XDG_RUNTIME_DIR=str(runtime))
    assert run.code == 3 and str(runtime / "containers" / "auth.json") in run.err.splitlines()[-1], run


def test_an_identity_token_is_refused_clearly_not_sent_as_a_password(basic_registry, tmp_path):
    reg = basic_registry
    argv = setup(reg, tmp_path)
    config = raw_config(tmp_path, {"auths": {reg.host: {"identitytoken": "refresh-token-abcdefgh"}}})
    run = run_seeder(*argv, DOCKER_CONFIG=str(config))
    assert run.code == 2 and "identity token" in run.err.splitlines()[-1], run
    assert "refresh-token-abcdefgh" not in run.err
