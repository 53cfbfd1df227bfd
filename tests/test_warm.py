"""The warm path: a second run on an intact target makes no request and imports nothing heavy.

Checked in a subprocess, so the test process's own imports (pytest, huggingface_hub for the fake hub's
tests) cannot hide a regression.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import blob, run_seeder, seeder_env, url_entry, write_manifest

# Modules a warm run (and an app's start-up check) must not pay for.
HEAVY = ("huggingface_hub", "requests", "urllib3", "httpx", "httpx2", "hf_xet", "tenacity", "tqdm", "structlog",
         "boto3", "botocore")

# The download engine, the resolvers and the install path: a check of what is installed needs none of them.
ENGINE = ("seeder.fetch", "seeder.sources", "seeder.install")

PROBE = """
import json, sys, time
started = time.monotonic()
{body}
print(json.dumps({{"rc": rc, "seconds": time.monotonic() - started,
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r}),
                  "engine": sorted(m for m in sys.modules if m.startswith({engine!r}))}}))
"""

CLI = "from seeder.cli import main\nrc = main(sys.argv[1:])"
API = "import seeder\nrc = len(seeder.check(sys.argv[1]))"


def _probe(body: str, *args: str, hub) -> dict:
    code = PROBE.format(body=body, heavy=HEAVY, engine=ENGINE)
    proc = subprocess.run([sys.executable, "-c", code, *args], env=seeder_env(hub.url), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def seeded(hub, tmp_path):
    files = {"config.json": b'{"hidden_size": 8}', "model.safetensors": blob(200_000, seed=1),
             "1_Pooling/config.json": b"{}"}
    hub.add_repo("org/emb", files)
    gguf = blob(300_000, seed=2)
    url = hub.add_file("llm/tiny.gguf", gguf)
    m = write_manifest(tmp_path / "models.toml",
                       '[[models]]\nname = "emb"\nrepo = "org/emb"\n\n' + url_entry("llm", url, gguf))
    target = tmp_path / "models"
    run = run_seeder("-m", str(m), "-t", str(target), hub=hub)
    assert run.code == 0, run
    return m, target


def test_warm_run_makes_no_request_and_imports_nothing_heavy(seeded, hub):
    m, target = seeded
    hub.clear_log()
    result = _probe(CLI, "-m", str(m), "-t", str(target), "--log-format", "json", hub=hub)
    assert result["rc"] == 0
    assert hub.requests == []
    assert result["heavy"] == [], f"the warm path imported {result['heavy']}"


def test_warm_run_in_a_terminal_format_imports_nothing_heavy_either(seeded, hub):
    # -q: nothing is printed, so the console renderer (structlog) is never needed.
    m, target = seeded
    hub.clear_log()
    result = _probe(CLI, "-q", "-m", str(m), "-t", str(target), "--log-format", "console", hub=hub)
    assert result["rc"] == 0 and hub.requests == []
    assert result["heavy"] == []


def test_verify_and_the_app_check_need_no_network_stack(seeded, hub):
    m, target = seeded
    hub.clear_log()
    result = _probe(CLI, "verify", "-m", str(m), "-t", str(target), "--log-format", "json", hub=hub)
    assert result["rc"] == 0 and result["heavy"] == []
    result = _probe(API, str(target), hub=hub)
    assert result["rc"] == 0 and result["heavy"] == []  # seeder.check(): no problems, nothing heavy
    assert hub.requests == []


def test_verify_and_the_public_api_never_import_the_download_engine(seeded, hub):
    m, target = seeded
    for body, args in ((CLI, ("verify", "-m", str(m), "-t", str(target), "--log-format", "json")),
                       (CLI, ("verify", "-t", str(target), "-m", str(target / "no-manifest.toml"))),
                       (API, (str(target),)),
                       ("import seeder\nrc = len(seeder.check(sys.argv[1], fast=False)) + 0 * len(seeder.installed(sys.argv[1]))",
                        (str(target),))):
        result = _probe(body, *args, hub=hub)
        assert result["rc"] == 0 and result["engine"] == [] and result["heavy"] == [], (args, result)
    # the probe sees the engine when it is there: a cold run loads it
    result = _probe(CLI, "-m", str(m), "-t", str(target.parent / "cold"), "--log-format", "json", hub=hub)
    assert result["rc"] == 0 and "seeder.fetch.download" in result["engine"]


def test_a_cold_run_with_a_lock_downloads_without_requests_or_the_hub_client(seeded, hub, tmp_path):
    # requests' import was most of a cold run's start-up: downloads go over http.client unless a proxy is set.
    m, _ = seeded
    hub.clear_log()
    result = _probe(CLI, "-m", str(m), "-t", str(tmp_path / "fresh"), "--log-format", "json", hub=hub)
    assert result["rc"] == 0
    assert [r for r in hub.requests if r.kind != "api"], "expected downloads"
    assert not {"requests", "urllib3", "huggingface_hub", "httpx", "httpx2", "boto3", "botocore"} & set(result["heavy"]), \
        result["heavy"]  # boto3 only when an s3:// cache is given
