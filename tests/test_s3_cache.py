"""A shared cache on S3-compatible storage (a real SeaweedFS): a cluster fetches each model from the
origin once, and nothing unverified ever reaches a target."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import blob, run_seeder, seeder_env, sha256, url_entry, write_manifest
from tests.fakehub import DEFAULT_GITATTRIBUTES

pytestmark = pytest.mark.seaweed

BUCKET = "seeder-cache"
CACHE = f"s3://{BUCKET}/team"


def _files() -> dict[str, bytes]:
    return {"config.json": b'{"hidden_size": 8}', "tokenizer.json": blob(30_000, seed=70),
            "model.safetensors": blob(3_000_000, seed=71),
            ".gitattributes": DEFAULT_GITATTRIBUTES}  # the hub's, in every repo


@pytest.fixture
def model_set(hub, tmp_path):
    """A repo (LFS and small git-pinned files) and a URL model, locked once like a committed lock."""
    files = _files()
    hub.add_repo("org/emb", files)
    gguf = blob(2_000_000, seed=72)
    url = hub.add_file("llm/tiny.gguf", gguf)
    m = write_manifest(tmp_path / "models.toml",
                       '[[models]]\nname = "emb"\nrepo = "org/emb"\n\n' + url_entry("llm", url, gguf))
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0
    hub.clear_log()
    total = sum(len(v) for v in files.values()) + len(gguf)
    return {"manifest": m, "files": files, "gguf": gguf, "total": total}


def _env(hub, store, **extra):
    return seeder_env(hub.url, **store.env(), **extra)


def _node(i: int, tmp_path: Path) -> list[str]:
    return ["-t", str(tmp_path / f"node{i}" / "models"), "--cache", str(tmp_path / f"node{i}" / "cache"),
            "--cache", CACHE]


def _seed(model_set, hub, store, tmp_path, i, *args, **extra):
    return run_seeder("-m", str(model_set["manifest"]), *_node(i, tmp_path), *args, env=_env(hub, store, **extra))


def _verify(model_set, tmp_path, i) -> int:
    return run_seeder("verify", "-m", str(model_set["manifest"]), "-t", str(tmp_path / f"node{i}" / "models")).code


def _blobs(store) -> dict[str, bytes]:
    s3 = store.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="team/blobs/").get("Contents", [])]
    return {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def _warnings(run) -> list[dict]:
    return [e for e in run.events if e.get("level") == "warning"]


def test_a_second_node_reads_the_bucket_and_the_layout_is_the_documented_one(model_set, hub, seaweed, tmp_path):
    run = _seed(model_set, hub, seaweed, tmp_path, 1)
    assert run.code == 0, run
    assert hub.body_bytes() == model_set["total"]
    uploaded = [e for e in run.events if e["event"] == "uploaded to remote cache"]
    assert len(uploaded) == 5 and all(e.get("model") in ("emb", "llm") for e in uploaded), uploaded  # as every event
    blobs = _blobs(seaweed)
    # blobs/sha256/<hex> holds exactly those bytes; small hub files pinned by git blob id by their oid
    big = model_set["files"]["model.safetensors"]
    assert blobs[f"team/blobs/sha256/{sha256(big)}"] == big
    assert blobs[f"team/blobs/sha256/{sha256(model_set['gguf'])}"] == model_set["gguf"]
    for key, data in blobs.items():
        kind, digest = key.split("/")[-2:]
        want = sha256(data) if kind == "sha256" else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        assert digest == want, key
    assert len(blobs) == len(model_set["files"]) + 1 and not any(k.startswith("team/leases/") for k in _all_keys(seaweed))

    hub.clear_log()
    run = _seed(model_set, hub, seaweed, tmp_path, 2)
    assert run.code == 0, run
    assert hub.body_bytes() == 0  # every byte from the bucket
    assert run.events[-1]["bytes_from_cache"] == model_set["total"]
    assert _verify(model_set, tmp_path, 2) == 0


def _all_keys(store) -> list[str]:
    return [o["Key"] for o in store.client().list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_four_nodes_at_once_fetch_each_byte_from_the_origin_once(model_set, hub, seaweed, tmp_path):
    hub.throttle_bps = 2_000_000  # a slow origin: the nodes overlap for seconds
    procs = [subprocess.Popen([sys.executable, "-m", "seeder", "-m", str(model_set["manifest"]), *_node(i, tmp_path),
                               "--log-format", "json"], env=_env(hub, seaweed), stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    assert "Traceback" not in "".join(errs)
    assert hub.body_bytes() <= 1.05 * model_set["total"], (hub.body_bytes(), model_set["total"])
    assert any("waiting for another node to fetch" in e for e in errs)  # the others did wait
    assert all(_verify(model_set, tmp_path, i) == 0 for i in range(4))
    hub.clear_log()
    run = _seed(model_set, hub, seaweed, tmp_path, 4)  # a fifth node, later
    assert run.code == 0 and hub.body_bytes() == 0, run


def test_a_killed_lease_holder_is_taken_over(model_set, hub, seaweed, tmp_path):
    lease = 3
    hub.throttle_bps = 400_000  # the 3 MB file takes ~8 s from the origin
    args = [sys.executable, "-m", "seeder", "-m", str(model_set["manifest"]), "--jobs", "1", "--log-format", "json"]
    env = _env(hub, seaweed, SEEDER_LEASE_SECONDS=str(lease))
    holder = subprocess.Popen([*args, *_node(0, tmp_path)], env=env, stderr=subprocess.PIPE, text=True)
    s3 = seaweed.client()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _leases(s3):
        time.sleep(0.05)
    assert _leases(s3), "the first node never took a lease"
    waiter = subprocess.Popen([*args, *_node(1, tmp_path)], env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    holder.kill()  # SIGKILL: no release, no more renewals
    killed = time.time()
    holder.wait()
    err = waiter.communicate(timeout=120)[1]
    assert waiter.returncode == 0, err
    took_over = [json.loads(line) for line in err.splitlines() if "took over an expired lease" in line]
    assert took_over, err
    at = datetime.fromisoformat(took_over[0]["timestamp"].replace("Z", "+00:00")).timestamp()
    assert at - killed <= lease + 15, at - killed
    assert _verify(model_set, tmp_path, 1) == 0
    assert _seed(model_set, hub, seaweed, tmp_path, 0).code == 0 and _verify(model_set, tmp_path, 0) == 0
    assert not _leases(s3)


def _leases(s3) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="team/leases/").get("Contents", [])]


def test_wrong_bytes_in_the_bucket_are_never_installed_and_get_replaced(model_set, hub, seaweed, tmp_path):
    assert _seed(model_set, hub, seaweed, tmp_path, 1).code == 0
    big = model_set["files"]["model.safetensors"]
    key = f"team/blobs/sha256/{sha256(big)}"
    wrong = bytearray(big)
    wrong[12345] ^= 0xFF
    seaweed.client().put_object(Bucket=BUCKET, Key=key, Body=bytes(wrong))
    hub.clear_log()
    run = _seed(model_set, hub, seaweed, tmp_path, 2)
    assert run.code == 0, run
    assert (tmp_path / "node2" / "models" / "emb" / "model.safetensors").read_bytes() == big
    assert hub.body_bytes() == len(big)  # only the bad blob came from the origin again
    assert any(w["event"].startswith("remote cache holds wrong bytes") for w in _warnings(run))
    assert seaweed.client().get_object(Bucket=BUCKET, Key=key)["Body"].read() == big  # replaced


def test_an_unreachable_endpoint_is_one_warning_and_the_origin_serves(model_set, hub, seaweed, tmp_path):
    # nothing listens there; an outage is waited out for half a lease: 2 s here
    env = _env(hub, seaweed) | {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "SEEDER_LEASE_SECONDS": "4"}
    run = run_seeder("-m", str(model_set["manifest"]), *_node(1, tmp_path), env=env)
    assert run.code == 0, run
    assert [w["event"] for w in _warnings(run)] == [
        "remote cache unavailable; continuing without it if it is not back soon"]
    assert "connection refused by 127.0.0.1:9" in _warnings(run)[0]["error"]  # the cause, and where
    assert any(e["event"] == "gave up on the remote cache for this run" for e in run.events)
    assert hub.body_bytes() == model_set["total"] and _verify(model_set, tmp_path, 1) == 0


def test_a_missing_bucket_is_one_warning_and_the_origin_serves(model_set, hub, seaweed, tmp_path):
    run = run_seeder("-m", str(model_set["manifest"]), "-t", str(tmp_path / "t"), "--cache", "s3://no-such-bucket/x",
                     env=_env(hub, seaweed))
    assert run.code == 0, run
    # SeaweedFS answers a missing bucket's HEAD with 404 and its writes with AccessDenied: one warning either way
    assert len(_warnings(run)) == 1 and "no-such-bucket" in _warnings(run)[0]["cache"], _warnings(run)
    assert hub.body_bytes() == model_set["total"]


def test_the_bucket_stopped_mid_run_is_one_warning_and_the_origin_serves(model_set, hub, seaweed, tmp_path):
    hub.throttle_bps = 1_000_000
    proc = subprocess.Popen([sys.executable, "-m", "seeder", "-m", str(model_set["manifest"]), "--jobs", "1",
                             *_node(1, tmp_path), "--log-format", "json"], env=_env(hub, seaweed),
                            stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "uploaded to remote cache" in line:
            seaweed.stop()
            break
    lines += proc.stderr.readlines()
    assert proc.wait(timeout=120) == 0, "".join(lines)
    warnings = [json.loads(x) for x in lines if '"level": "warning"' in x]
    assert len(warnings) == 1, warnings
    assert _verify(model_set, tmp_path, 1) == 0


def test_offline_seeds_from_a_complete_bucket_and_names_what_it_lacks(model_set, hub, seaweed, tmp_path):
    assert _seed(model_set, hub, seaweed, tmp_path, 1).code == 0
    hub.clear_log()
    run = _seed(model_set, hub, seaweed, tmp_path, 2, "--offline")
    assert run.code == 0, run
    assert hub.requests == [] and _verify(model_set, tmp_path, 2) == 0
    seaweed.client().delete_object(Bucket=BUCKET, Key=f"team/blobs/sha256/{sha256(model_set['gguf'])}")
    run = _seed(model_set, hub, seaweed, tmp_path, 3, "--offline")
    assert run.code == 3 and "llm/tiny.gguf" in run.err and "emb/" not in run.err.split("any cache:")[-1], run
    assert hub.requests == []


def test_read_only_nodes_read_and_never_write(model_set, hub, seaweed, tmp_path):
    run = _seed(model_set, hub, seaweed, tmp_path, 1, SEEDER_CACHE_WRITE="0")
    assert run.code == 0 and _blobs(seaweed) == {} and _warnings(run) == [], run
    assert _seed(model_set, hub, seaweed, tmp_path, 2).code == 0  # a writer fills the bucket
    hub.clear_log()
    # SEEDER_CACHE takes the same chain as repeated --cache flags, comma-separated
    env = _env(hub, seaweed, SEEDER_CACHE=f"{tmp_path / 'node3' / 'cache'},{CACHE}", SEEDER_CACHE_WRITE="0")
    run = run_seeder("-m", str(model_set["manifest"]), "-t", str(tmp_path / "node3" / "models"), env=env)
    assert run.code == 0 and hub.body_bytes() == 0 and run.events[-1]["bytes_from_cache"] == model_set["total"], run


def test_a_node_without_write_permission_warns_once_and_carries_on(model_set, hub, tmp_path):
    from tests.seaweed import SeaweedFS

    with SeaweedFS(tmp_path / "sw", identities=True) as store:
        store.create_bucket(BUCKET)
        env = _env(hub, store) | store.env(key="reader-key", secret="reader-secret")
        run = run_seeder("-m", str(model_set["manifest"]), *_node(1, tmp_path), env=env)
        assert run.code == 0, run
        assert len(_warnings(run)) == 1, _warnings(run)
        assert _verify(model_set, tmp_path, 1) == 0


def test_cache_push_fills_a_bucket_for_offline_nodes_and_du_prune_work(model_set, hub, seaweed, tmp_path):
    target = tmp_path / "filled"
    assert run_seeder("-m", str(model_set["manifest"]), "-t", str(target), hub=hub).code == 0
    env = _env(hub, seaweed)
    run = run_seeder("cache", "push", "--cache", CACHE, "-t", str(target), env=env)
    assert run.code == 0, run
    files = len(model_set["files"]) + 1
    assert len(_blobs(seaweed)) == files
    hub.clear_log()
    assert _seed(model_set, hub, seaweed, tmp_path, 1, "--offline").code == 0 and hub.requests == []
    du = run_seeder("cache", "du", "--cache", CACHE, env=env)
    assert du.code == 0 and du.out.startswith(f"{files} files"), du
    seaweed.client().put_object(Bucket=BUCKET, Key="team/blobs/sha256/" + "0" * 64, Body=b"unreferenced")
    run = run_seeder("cache", "prune", "--cache", CACHE, "-m", str(model_set["manifest"]), env=env)
    assert run.code == 0, run
    assert len(_blobs(seaweed)) == files and f"team/blobs/sha256/{'0' * 64}" not in _blobs(seaweed)


def test_credentials_and_signed_urls_never_appear_in_any_output(model_set, hub, seaweed, tmp_path):
    key, secret = "AKIAEXAMPLEKEY123456", "sEcReT/ExampleSecretKeyThatMustNeverShow0"
    env = _env(hub, seaweed) | seaweed.env(key=key, secret=secret)
    outputs = []
    for args in (["-m", str(model_set["manifest"]), *_node(1, tmp_path), "-v"],
                 ["-m", str(model_set["manifest"]), *_node(2, tmp_path), "-v"],
                 ["cache", "du", "--cache", CACHE], ["--help"]):
        run = run_seeder(*args, env=env)
        outputs += [run.out, run.err]
    bad = env | {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    run = run_seeder("-m", str(model_set["manifest"]), *_node(3, tmp_path), "-v", env=bad)
    outputs += [run.out, run.err]
    for state in tmp_path.rglob(".seeder/state.json"):
        outputs.append(state.read_text())
    text = "\n".join(outputs)
    assert "bytes_from_cache" in text  # the runs did read the bucket
    for needle in (key, secret, "X-Amz-Signature", "X-Amz-Credential", "Signature="):
        assert needle not in text, needle


def test_losing_a_storage_node_mid_run_reads_from_the_replica(model_set, hub, seaweed_cluster, tmp_path):
    assert _seed(model_set, hub, seaweed_cluster, tmp_path, 0).code == 0  # fill the bucket (replication 001)
    hub.clear_log()
    procs = [subprocess.Popen([sys.executable, "-m", "seeder", "-m", str(model_set["manifest"]), *_node(i, tmp_path),
                               "--log-format", "json"], env=_env(hub, seaweed_cluster), stderr=subprocess.PIPE,
                              text=True) for i in (1, 2, 3)]
    time.sleep(0.3)
    seaweed_cluster.stop_volume(0)
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    assert all(_verify(model_set, tmp_path, i) == 0 for i in (1, 2, 3))
