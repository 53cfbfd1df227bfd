"""The hub's CDN, as huggingface.co has it: LFS resolves answer 302 to a signed URL on another host that
expires. A download that outlives its URL goes back through the hub for a new one, and the token never
leaves the hub for the CDN."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import blob, run_seeder, seeder_env, sha256, write_manifest

TOKEN = "hf_CdnTeStToKeN0123456789abcdef"
SIZE = 6 << 20
DATA = blob(SIZE, seed=300)


def _gated_repo(hub, tmp_path: Path) -> Path:
    hub.token = TOKEN
    hub.add_repo("org/big", {"model.safetensors": DATA, "config.json": b'{"a": 1}'}, gated=True)
    m = write_manifest(tmp_path / "models.toml", '[[models]]\nname = "m"\nrepo = "org/big"\n')
    assert run_seeder("lock", "-m", str(m), hub=hub, HF_TOKEN=TOKEN).code == 0
    hub.clear_log()
    return m


def _resolves(hub) -> list:
    return [r for r in hub.requests if r.kind == "resolve" and r.method == "GET" and r.path.endswith(".safetensors")]


def _seed_while_the_first_url_expires(hub, m: Path, target: Path, ttl: float, **env: str) -> str:
    """Seed with ``ttl`` for the first signed URL only, so it expires once, however the parts are timed."""
    hub.link_ttl = ttl
    proc = subprocess.Popen([sys.executable, "-m", "seeder", "-m", str(m), "-t", str(target), "--log-format", "json"],
                            env=seeder_env(hub.url, HF_TOKEN=TOKEN, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not any(r.status == 302 for r in _resolves(hub)) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    hub.link_ttl = 3600
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert (target / "m" / "model.safetensors").read_bytes() == DATA
    # Bytes: each once, but for what a cut-short read lost; the token to the hub each time, never the CDN.
    assert hub.body_bytes("model.safetensors") <= SIZE + (1 << 20)
    assert all(r.auth_value == f"Bearer {TOKEN}" for r in hub.requests if r.server == "hub")
    assert [r for r in hub.requests if r.server == "cdn"] and not hub.cdn_saw_auth
    assert TOKEN not in err
    return err


# Several parts meet the expired URL at about the same time: each must go back through the hub, none
# may give the download up because another one already did.
def test_parts_that_outlive_their_signed_url_get_a_new_one_through_the_hub(hub, tmp_path):
    m = _gated_repo(hub, tmp_path)
    hub.throttle_bps = 512 << 10  # 4 connections: 6 MiB in about 3 s, three times the URL's life
    _seed_while_the_first_url_expires(hub, m, tmp_path / "t", 1.0, SEEDER_CONNECTIONS="4",
                                      SEEDER_PART_SIZE="256K", SEEDER_MULTIPART_MIN="1")
    resolves = _resolves(hub)
    refused = [r for r in hub.requests if r.server == "cdn" and r.status == 403]
    assert refused and all(r.refused == "expired" for r in refused)  # the CDN enforced the expiry...
    # ... and the seeder went back through the hub for a new URL: once, or once per connection that met
    # the expired URL before a new one was in (a part asks through the hub while there is none).
    first_refusal = min(r.started for r in refused)
    again = [r for r in resolves[1:] if r.started >= first_refusal]
    assert 1 <= len(again) == len(resolves) - 1 <= 4, [(r.started, r.status) for r in resolves]
    assert all(r.status == 302 for r in resolves)
    # Parts go straight to the CDN: the hub sees a part only when there is no (valid) URL to go to.
    parts = [r for r in hub.requests if r.server == "cdn" and r.range]
    assert len(parts) > 4 * len(resolves)


def test_a_stream_resumed_after_its_url_expired_asks_the_hub_again(hub, tmp_path):
    m = _gated_repo(hub, tmp_path)
    hub.throttle_bps = 2 << 20  # the cut at 3/4 of 6 MiB comes after 2 s, the URL lives 1 s
    hub.add_fault("model.safetensors", "reset", at=SIZE * 3 // 4)
    _seed_while_the_first_url_expires(hub, m, tmp_path / "t", 1.0, SEEDER_CONNECTIONS="1")
    first, resume = _resolves(hub)
    assert resume.started > first.started + 1.0 and resume.range_start  # a resume, after the expiry...
    assert not [r for r in hub.requests if r.server == "cdn" and r.status == 403]  # ... never on the old URL
    assert hub.unfired_faults() == []


def test_the_token_reaches_the_hub_and_never_the_cdn(hub, tmp_path):
    hub.token = TOKEN
    small = blob(40_000, seed=301)
    commit = hub.add_repo("org/gated", {"model.safetensors": DATA, "small.safetensors": small,
                                        "tokenizer.json": blob(200_000, seed=302)}, gated=True)
    # A repo model (API, then parts and a single stream), and a hub URL without a sha256 (a HEAD resolves it).
    m = write_manifest(tmp_path / "models.toml",
                       '[[models]]\nname = "m"\nrepo = "org/gated"\n\n'
                       f'[[models]]\nname = "u"\nurl = "https://huggingface.co/org/gated/resolve/{commit}/'
                       'small.safetensors"\n')
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, HF_TOKEN=TOKEN,
                     SEEDER_PART_SIZE="1M", SEEDER_MULTIPART_MIN="1M")
    assert run.code == 0, run
    assert (tmp_path / "t" / "m" / "model.safetensors").read_bytes() == DATA
    assert (tmp_path / "t" / "u" / "small.safetensors").read_bytes() == small
    lock = json.loads((tmp_path / "models.lock").read_text())
    assert lock["models"][1]["files"][0]["sha256"] == sha256(small)
    hub_side = [r for r in hub.requests if r.server == "hub"]
    assert {r.kind for r in hub_side} == {"api", "resolve"}
    assert all(r.auth_value == f"Bearer {TOKEN}" for r in hub_side)
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert {r.path.rsplit("/", 1)[-1] for r in cdn} == {"model.safetensors", "small.safetensors"}
    assert len([r for r in cdn if r.range]) > 2  # parts went straight to the CDN
    assert not hub.cdn_saw_auth
    assert TOKEN not in run.err + run.out
