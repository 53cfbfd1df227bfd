"""A seeded, bounded chaos run of the shared cache, in the spirit of the soak that found issue #22.

Rounds of three nodes against SeaweedFS (behind the fault proxy) and the fake hub; while they run,
nodes are SIGKILLed or SIGSTOPped for a while, and the bucket "restarts" (refuses connections and drops
the open ones for a few seconds). After each round: every node that exited 0 verifies, a killed node
run again finishes and verifies, every blob in the bucket hashes to its name, and no node ran past the
time bound. The seed is printed (and named in every failure): ``SEEDER_CHAOS_SEED=<n>`` replays it.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import blob, run_seeder, seeder_env, url_entry, write_manifest
from tests.fakehub import DEFAULT_GITATTRIBUTES
from tests.s3faults import FaultProxy
from tests.seaweed import BUCKET

pytestmark = pytest.mark.seaweed

ROUNDS = 3
NODES = 3
NODE_TIME_BOUND = 60.0  # seconds one node may take in a round, faults included


def _blob_ok(key: str, data: bytes) -> bool:
    kind, name = key.split("/")[-2:]
    if kind == "sha256":
        return hashlib.sha256(data).hexdigest() == name
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == name


def test_chaos_rounds_keep_every_invariant(hub, seaweed, tmp_path):
    seed = int(os.environ.get("SEEDER_CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"chaos seed: {seed} (replay with SEEDER_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    hub.add_repo("org/emb", {"config.json": b'{"d": 8}', "model.safetensors": blob(3_000_000, seed=91),
                             "tokenizer.json": blob(400_000, seed=92), ".gitattributes": DEFAULT_GITATTRIBUTES})
    gguf = blob(2_000_000, seed=93)
    m = write_manifest(tmp_path / "models.toml", '[[models]]\nname = "emb"\nrepo = "org/emb"\n\n'
                       + url_entry("llm", hub.add_file("llm/tiny.gguf", gguf), gguf))
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0
    hub.throttle_bps = 3_000_000  # runs overlap for seconds
    s3 = seaweed.client()
    with FaultProxy(seaweed.endpoint) as proxy:
        env = seeder_env(hub.url, **{**seaweed.env(), "AWS_ENDPOINT_URL": proxy.endpoint,
                                     "SEEDER_LEASE_SECONDS": "3"})
        for rnd in range(ROUNDS):
            for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):  # each round starts cold
                s3.delete_object(Bucket=BUCKET, Key=obj["Key"])

            def args(i: int) -> list[str]:
                node = tmp_path / f"r{rnd}n{i}"
                return [sys.executable, "-m", "seeder", "-m", str(m), "-t", str(node / "models"), "--cache",
                        str(node / "cache"), "--cache", f"s3://{BUCKET}/c", "--log-format", "json"]

            started = time.monotonic()
            procs = [subprocess.Popen(args(i), env=env, stderr=subprocess.PIPE, text=True) for i in range(NODES)]
            faults = _unleash(rng, procs, proxy)
            codes = []
            for p in procs:
                try:
                    _, err = p.communicate(timeout=max(1.0, started + NODE_TIME_BOUND - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    pytest.fail(f"seed {seed} round {rnd}: a node ran past {NODE_TIME_BOUND} s ({faults})")
                assert "Traceback" not in err, f"seed {seed} round {rnd} ({faults}):\n{err}"
                codes.append(p.returncode)
            for i, code in enumerate(codes):
                if code == -signal.SIGKILL:  # it resumes on its own next run
                    again = subprocess.run(args(i), env=env, capture_output=True, text=True, timeout=NODE_TIME_BOUND)
                    code = again.returncode
                assert code == 0, f"seed {seed} round {rnd} node {i} exited {code} ({faults})"
                verify = run_seeder("verify", "-m", str(m), "-t", str(tmp_path / f"r{rnd}n{i}" / "models"))
                assert verify.code == 0, f"seed {seed} round {rnd} node {i}: {verify} ({faults})"
            for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix="c/blobs/").get("Contents", []):
                data = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
                assert _blob_ok(obj["Key"], data), f"seed {seed} round {rnd}: {obj['Key']} holds other bytes"


def _unleash(rng: random.Random, procs: list[subprocess.Popen], proxy: FaultProxy) -> list[str]:
    """Two or three faults at random moments of the first seconds; returns what was done, for messages."""
    plan = sorted((rng.uniform(0.3, 4.0), rng.choice(["kill", "stop", "restart"]), rng.randrange(len(procs)))
                  for _ in range(rng.randint(2, 3)))
    done, t0 = [], time.monotonic()
    for at, what, i in plan:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        proc = procs[i]
        if what == "restart":
            seconds = rng.uniform(1.0, 4.0)
            proxy.refuse(seconds)
            done.append(f"bucket down {seconds:.1f} s at {at:.1f} s")
        elif proc.poll() is None and what == "kill":
            proc.send_signal(signal.SIGKILL)
            done.append(f"node {i} killed at {at:.1f} s")
        elif proc.poll() is None:
            seconds = rng.uniform(1.0, 5.0)  # a stopped lease holder stops renewing: others take over
            proc.send_signal(signal.SIGSTOP)
            time.sleep(seconds)
            proc.send_signal(signal.SIGCONT)
            done.append(f"node {i} stopped {seconds:.1f} s at {at:.1f} s")
    return done
