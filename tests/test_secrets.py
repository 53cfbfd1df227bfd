"""The hub token, through every channel, reaches only the hub and never shows anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import blob, seeder_env

TOKEN = "hf_RecognisableSecret_9f8e7d6c5b4a"


def _setup(hub, tmp_path: Path) -> Path:
    hub.token = TOKEN
    hub.enable_cdn()
    hub.add_repo("org/gated", {"w.safetensors": blob(100_000, seed=1), "config.json": b"{}"}, gated=True)
    m = tmp_path / "models.toml"
    m.write_text('[[models]]\nname = "m"\nrepo = "org/gated"\n')
    return m


def _assert_nowhere(tmp_path: Path, *outputs: str) -> None:
    for text in outputs:
        assert TOKEN not in text
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.name not in ("token", "models.toml"):
            assert TOKEN.encode() not in f.read_bytes(), f


def _run(args: list[str], env: dict, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "seeder", *args, "--log-format", "json", "-v"],
                          env=env, capture_output=True, text=True, timeout=120)


CHANNELS = ["env HF_TOKEN", "HF_TOKEN_FILE", "--token-file", "docker secret", "huggingface token file"]


def _channel(name: str, tmp_path: Path, hub) -> tuple[dict, list[str], list[str]]:
    """The environment, extra arguments and command prefix that hand the token over through ``name``."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    if name == "env HF_TOKEN":
        return seeder_env(hub.url, HF_TOKEN=TOKEN), [], []
    if name == "HF_TOKEN_FILE":
        return seeder_env(hub.url, HF_TOKEN_FILE=str(token_file)), [], []
    if name == "--token-file":
        return seeder_env(hub.url), ["--token-file", str(token_file)], []
    if name == "huggingface token file":
        (tmp_path / "hf").mkdir()
        (tmp_path / "hf" / "token").write_text(TOKEN)
        return seeder_env(hub.url, HF_HOME=str(tmp_path / "hf")), [], []
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("the Docker secret channel needs root and unshare(1) for a private /run/secrets")
    # In a private mount namespace, so the host's /run is untouched.
    script = (f"mkdir -p /run/secrets && mount -t tmpfs tmpfs /run/secrets && "
              f"cp {token_file} /run/secrets/hf_token && exec \"$@\"")
    return seeder_env(hub.url), [], ["unshare", "-m", "sh", "-c", script, "sh"]


@pytest.mark.parametrize("channel", CHANNELS)
def test_every_channel_reaches_the_hub_only_and_leaks_nowhere(channel, hub, tmp_path):
    m = _setup(hub, tmp_path)
    env, extra, prefix = _channel(channel, tmp_path, hub)
    proc = _run(["-m", str(m), "-t", str(tmp_path / "t"), *extra], env, prefix)
    assert proc.returncode == 0, proc.stderr
    resolves = [r for r in hub.requests if r.kind == "resolve"]
    assert resolves and all(r.auth_value == f"Bearer {TOKEN}" for r in resolves)
    assert not any(r.auth for r in hub.requests if r.server == "cdn")
    _assert_nowhere(tmp_path, proc.stdout, proc.stderr)


def test_errors_and_help_never_print_the_token(hub, tmp_path):
    m = _setup(hub, tmp_path)
    hub.token = "hf_a_different_token"  # ours is now wrong: the 401 error must not echo it
    proc = _run(["-m", str(m), "-t", str(tmp_path / "t")], seeder_env(hub.url, HF_TOKEN=TOKEN))
    assert proc.returncode == 3 and "HF_TOKEN" in proc.stderr
    help_ = subprocess.run([sys.executable, "-m", "seeder", "--help"], env=seeder_env(hub.url, HF_TOKEN=TOKEN),
                           capture_output=True, text=True)
    sub_help = subprocess.run([sys.executable, "-m", "seeder", "seed", "--help"],
                              env=seeder_env(hub.url, HF_TOKEN=TOKEN), capture_output=True, text=True)
    _assert_nowhere(tmp_path, proc.stdout, proc.stderr, help_.stdout, help_.stderr, sub_help.stdout)


def test_a_secret_in_a_message_is_redacted(hub, tmp_path):
    # Any message that would carry the token (here: a manifest error quoting it) is redacted on output.
    (tmp_path / "models.toml").write_text(f'[[models]]\nname = "m"\nrepo = "org/x"\nrevision = "..{TOKEN}"\n')
    proc = _run(["-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t")], seeder_env(hub.url, HF_TOKEN=TOKEN))
    assert proc.returncode == 2 and "***" in proc.stderr
    _assert_nowhere(tmp_path, proc.stdout, proc.stderr)


def test_the_token_is_for_the_hub_origin_only():
    from seeder.settings import Network

    net = Network(endpoint="https://Hub.example:8443")
    assert net.is_hub("https://hub.example:8443/org/m/resolve/main/x")
    assert not net.is_hub("http://hub.example:8443/x")  # the same host over plain http: no token
    assert not net.is_hub("https://hub.example/x")  # another port is another origin
    assert not net.is_hub("https://cdn.hub.example:8443/x")
