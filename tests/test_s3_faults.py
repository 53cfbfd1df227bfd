"""The shared cache under faults (a real SeaweedFS behind tests/s3faults.py's proxy): a busy, wrong or
briefly absent bucket costs a warning and bounded origin traffic, never a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import blob, run_seeder, seeder_env, sha256, url_entry, write_manifest
from tests.fakehub import DEFAULT_GITATTRIBUTES, git_blob_sha1
from tests.s3faults import FaultProxy
from tests.seaweed import BUCKET, SeaweedFS

pytestmark = pytest.mark.seaweed

CACHE = f"s3://{BUCKET}/team"
BIG = blob(3_000_000, seed=81)


@pytest.fixture
def model_set(hub, tmp_path):
    files = {"config.json": b'{"hidden_size": 8}', "model.safetensors": BIG, ".gitattributes": DEFAULT_GITATTRIBUTES}
    hub.add_repo("org/emb", files)
    gguf = blob(2_000_000, seed=82)
    url = hub.add_file("llm/tiny.gguf", gguf)
    m = write_manifest(tmp_path / "models.toml",
                       '[[models]]\nname = "emb"\nrepo = "org/emb"\n\n' + url_entry("llm", url, gguf))
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0
    hub.clear_log()
    return {"manifest": m, "total": sum(map(len, files.values())) + len(gguf)}


@pytest.fixture
def proxy(seaweed):
    with FaultProxy(seaweed.endpoint) as p:
        yield p


def _env(hub, seaweed, endpoint: str, **extra) -> dict[str, str]:
    return seeder_env(hub.url, **{**seaweed.env(), "AWS_ENDPOINT_URL": endpoint, **extra})


def _args(manifest: Path, tmp_path: Path, i: int, *more: str) -> list[str]:
    return [sys.executable, "-m", "seeder", "-m", str(manifest), "-t", str(tmp_path / f"node{i}" / "models"),
            "--cache", str(tmp_path / f"node{i}" / "cache"), "--cache", CACHE, "--log-format", "json", *more]


class Node:
    """A seeder run in the background; its log lines are read as they come."""

    def __init__(self, manifest, tmp_path, i, env, *more):
        self.i = i
        self.proc = subprocess.Popen(_args(manifest, tmp_path, i, *more), env=env, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(event in line for line in list(self.lines)):
            assert self.proc.poll() is None or self._reader.is_alive(), f"node{self.i} ended before {event!r}"
            assert time.monotonic() < deadline, f"no {event!r} from node{self.i}:\n{self.text}"
            time.sleep(0.02)

    def finish(self, timeout: float = 180) -> int:
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        assert "Traceback" not in self.text, self.text
        return self.proc.returncode

    @property
    def text(self) -> str:
        return "".join(self.lines)

    @property
    def events(self) -> list[dict]:
        return [json.loads(x) for x in self.lines if x.startswith("{")]

    def warnings(self, starting: str = "") -> list[dict]:
        return [e for e in self.events if e.get("level") == "warning" and e["event"].startswith(starting)]


def _verify(manifest, tmp_path, i) -> int:
    return run_seeder("verify", "-m", str(manifest), "-t", str(tmp_path / f"node{i}" / "models")).code


def _keys(seaweed, under: str) -> list[str]:
    listed = seaweed.client().list_objects_v2(Bucket=BUCKET, Prefix=f"team/{under}").get("Contents", [])
    return [o["Key"] for o in listed]


@pytest.mark.parametrize("status,code", [(503, "SlowDown"), (500, "InternalError")])
def test_a_bucket_failing_uploads_costs_one_warning_and_the_run_succeeds(model_set, hub, seaweed, proxy, tmp_path,
                                                                        status, code):
    proxy.fail("PUT|POST", r"/team/blobs/", status, code)  # single PUTs and CreateMultipartUpload alike
    hub.throttle_bps = 2_000_000  # the nodes overlap: two of them wait for the first one's lease
    env = _env(hub, seaweed, proxy.endpoint, SEEDER_RETRIES="2")  # the lease stays at its default 60 s
    started = time.monotonic()
    nodes = [Node(model_set["manifest"], tmp_path, i, env) for i in range(3)]
    assert [n.finish() for n in nodes] == [0, 0, 0], [n.text[-3000:] for n in nodes]
    # Each holder released its lease when its upload failed: nobody waited a lease out.
    assert time.monotonic() - started < 45
    assert all(_verify(model_set["manifest"], tmp_path, i) == 0 for i in range(3))
    assert proxy.seen("PUT|POST", r"/team/blobs/"), "no upload was even tried"
    for n in nodes:
        failed = n.warnings("uploads to the remote cache keep failing")
        assert len(failed) <= 1 and all(code in w["error"] for w in failed), n.text
        assert len(n.warnings()) == len(failed), n.warnings()  # the retries were quiet
    assert any(n.warnings("uploads to the remote cache keep failing") for n in nodes)
    assert not _keys(seaweed, "leases/") and not _keys(seaweed, "blobs/")


def test_a_store_that_ignores_conditional_writes_is_found_out_and_every_node_fetches(model_set, hub, seaweed, proxy,
                                                                                      tmp_path):
    """Without If-None-Match/If-Match a store answers every lease PUT with 200: each node would believe it held
    every lease. A probe finds that out once per node; each then fetches for itself, and verifies what it installs."""
    proxy.strip_headers("If-None-Match", "If-Match")
    hub.throttle_bps = 2_000_000  # the nodes overlap: with single flight, two of them would wait
    env = _env(hub, seaweed, proxy.endpoint)
    nodes = [Node(model_set["manifest"], tmp_path, i, env) for i in range(3)]
    assert [n.finish() for n in nodes] == [0, 0, 0], [n.text[-3000:] for n in nodes]
    assert proxy.stripped and {n.lower() for *_, names in proxy.stripped for n in names} <= {"if-none-match", "if-match"}
    for n in nodes:
        assert [w["event"] for w in n.warnings()] == [
            "the bucket has no conditional writes: every node fetches from the origin"], n.warnings()
        assert not [e for e in n.events if e["event"] == "waiting for another node to fetch"], n.text
    assert all(_verify(model_set["manifest"], tmp_path, i) == 0 for i in range(3))
    assert hub.body_bytes() <= 3 * model_set["total"], (hub.body_bytes(), model_set["total"])
    assert not _keys(seaweed, "leases/")  # the probes, too, are gone
    blobs = _keys(seaweed, "blobs/")
    assert len(blobs) == 4, blobs  # config.json, .gitattributes, model.safetensors, tiny.gguf
    for key in blobs:  # concurrent uploads of one blob: whichever landed last, it is the right bytes
        data = seaweed.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
        kind, name = key.split("/")[-2:]
        assert name == (sha256(data) if kind == "sha256" else git_blob_sha1(data)), key


def test_a_store_that_ignores_only_if_match_is_found_out_too(model_set, hub, seaweed, proxy, tmp_path):
    # Renewals, takeovers and releases rest on If-Match: ignored, two waiters could take over one lease.
    proxy.strip_headers("If-Match")
    node = Node(model_set["manifest"], tmp_path, 1, _env(hub, seaweed, proxy.endpoint))
    assert node.finish() == 0, node.text
    [warning] = node.warnings()
    assert warning["event"].startswith("the bucket has no conditional writes") and "If-Match" in warning["error"]
    assert _verify(model_set["manifest"], tmp_path, 1) == 0 and not _keys(seaweed, "leases/")


def test_a_wrong_blob_is_replaced_by_one_node_while_the_others_wait(model_set, hub, seaweed, proxy, tmp_path):
    env = _env(hub, seaweed, proxy.endpoint)
    first = Node(model_set["manifest"], tmp_path, 9, env)
    assert first.finish() == 0, first.text
    key = f"team/blobs/sha256/{sha256(BIG)}"
    wrong = bytearray(BIG)
    wrong[777] ^= 0xFF
    seaweed.client().put_object(Bucket=BUCKET, Key=key, Body=bytes(wrong))
    hub.clear_log()
    hub.throttle_bps = 1_000_000  # the replacement takes seconds: the others are waiting meanwhile
    nodes = [Node(model_set["manifest"], tmp_path, i, env) for i in range(4)]
    assert [n.finish() for n in nodes] == [0] * 4, [n.text[-3000:] for n in nodes]
    assert hub.body_bytes() <= 1.5 * len(BIG), hub.body_bytes()
    for n in nodes:  # a blob known to be bad is read once
        assert len(n.warnings("remote cache holds wrong bytes")) <= 1, n.text
    assert all(_verify(model_set["manifest"], tmp_path, i) == 0 for i in range(4))
    assert seaweed.client().get_object(Bucket=BUCKET, Key=key)["Body"].read() == BIG
    assert not _keys(seaweed, "leases/")


def test_a_short_outage_costs_seconds_not_the_set(model_set, hub, seaweed, proxy, tmp_path):
    hub.throttle_bps = 4_000_000
    env = _env(hub, seaweed, proxy.endpoint)
    proxy.refuse(5.0)  # as a store restart does, just as the nodes start
    started = time.monotonic()
    nodes = [Node(model_set["manifest"], tmp_path, i, env) for i in range(4)]
    assert [n.finish() for n in nodes] == [0] * 4, [n.text[-3000:] for n in nodes]
    assert hub.body_bytes() <= 1.5 * model_set["total"], (hub.body_bytes(), model_set["total"])
    assert time.monotonic() - started < 40
    assert all(_verify(model_set["manifest"], tmp_path, i) == 0 for i in range(4))
    for n in nodes:
        assert len(n.warnings()) <= 1, n.warnings()
        assert any(e["event"] == "from remote cache" for e in n.events) or any(
            e["event"] == "uploaded to remote cache" for e in n.events), n.text


def test_a_node_that_gave_up_on_the_bucket_neither_leases_nor_uploads(model_set, hub, seaweed, proxy, tmp_path):
    hub.throttle_bps = 500_000  # the big file takes ~6 s from the origin
    env = _env(hub, seaweed, proxy.endpoint, SEEDER_LEASE_SECONDS="4")  # it gives up after 2 s of outage
    node = Node(model_set["manifest"], tmp_path, 1, env, "--jobs", "1")
    node.wait_for('"downloading", "model": "emb", "file": "model.safetensors"')
    proxy.refuse(5)  # longer than it waits, shorter than the download: only the lease's renewals notice
    cut = time.monotonic()
    assert node.finish() == 0, node.text
    assert any(e["event"] == "gave up on the remote cache for this run" for e in node.events), node.text
    assert proxy.seen("PUT|POST", since=cut) == []
    assert _verify(model_set["manifest"], tmp_path, 1) == 0


def _hold_lease(seaweed, digest: str) -> str:
    resp = seaweed.client().put_object(Bucket=BUCKET, Key=f"team/leases/{digest}", Body=b'{"holder": "test"}',
                                       IfNoneMatch="*")
    return resp["ETag"]


def test_a_released_lease_is_no_takeover_and_an_expired_one_is(model_set, hub, seaweed, proxy, tmp_path):
    digest = f"sha256-{sha256(BIG)}"
    hub.throttle_bps = 4_000_000
    env = _env(hub, seaweed, proxy.endpoint, SEEDER_LEASE_SECONDS="60")
    etag = _hold_lease(seaweed, digest)  # another node is fetching the big file
    # The node's lease attempts reach the store a second late: the holder releases in that second, just
    # after the node last looked at the lease, as a holder finishing at an unlucky moment does.
    proxy.delay("PUT", r"/team/leases/", 1.0)
    node = Node(model_set["manifest"], tmp_path, 1, env, "--jobs", "1")
    node.wait_for("waiting for another node to fetch")
    deadline = time.monotonic() + 30
    while not proxy.seen("HEAD", r"/team/leases/"):
        assert time.monotonic() < deadline, node.text
        time.sleep(0.01)
    seaweed.client().delete_object(Bucket=BUCKET, Key=f"team/leases/{digest}", IfMatch=etag)  # released, no blob
    assert node.finish() == 0, node.text
    assert node.warnings("took over") == [], node.warnings()

    seaweed.client().delete_object(Bucket=BUCKET, Key=f"team/blobs/sha256/{sha256(BIG)}")
    _hold_lease(seaweed, digest)  # and now a holder that never renews
    env = _env(hub, seaweed, proxy.endpoint, SEEDER_LEASE_SECONDS="2")
    node = Node(model_set["manifest"], tmp_path, 2, env, "--jobs", "1")
    assert node.finish() == 0, node.text
    assert len(node.warnings("took over an expired lease")) == 1, node.warnings()


def test_a_bucket_that_dies_mid_read_is_one_warning(model_set, hub, seaweed, proxy, tmp_path):
    env = _env(hub, seaweed, proxy.endpoint, SEEDER_LEASE_SECONDS="4", SEEDER_CONNECTIONS="8",
               SEEDER_PART_SIZE=str(256 << 10), SEEDER_MULTIPART_MIN=str(256 << 10))
    assert Node(model_set["manifest"], tmp_path, 1, env).finish() == 0
    hub.clear_log()
    proxy.delay("GET", r"/team/blobs/", 0.5)  # a slow read, so that it is cut in the middle
    node = Node(model_set["manifest"], tmp_path, 2, env, "--jobs", "1")
    deadline = time.monotonic() + 60
    while not proxy.seen("GET", r"/team/blobs/sha256/"):  # the read of the big blob began
        assert time.monotonic() < deadline and node.proc.poll() is None, node.text
        time.sleep(0.05)
    time.sleep(0.6)
    proxy.refuse(600)  # dead for the rest of the run
    assert node.finish() == 0, node.text
    assert len(node.warnings()) == 1, node.warnings()
    assert node.text.count('"retrying"') == 0, node.text
    assert _verify(model_set["manifest"], tmp_path, 2) == 0


def test_one_client_serves_every_bucket_entry_on_an_endpoint(model_set, hub, seaweed, tmp_path):
    env = seeder_env(hub.url, **seaweed.env())

    def peak_rss_kb(entries: int) -> int:
        caches = [a for i in range(entries) for a in ("--cache", f"s3://{BUCKET}/p{i}")]
        target = tmp_path / f"t{entries}"
        proc = subprocess.Popen([sys.executable, "-m", "seeder", "-m", str(model_set["manifest"]), "-t", str(target),
                                 "--offline", *caches, "--log-format", "json"], env=env, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode()
        assert proc.returncode == 3 and "Traceback" not in err, err  # offline, and in none of them
        return usage.ru_maxrss

    few, many = peak_rss_kb(2), peak_rss_kb(40)
    # boto3 costs ~13 MB a client: one per entry would add ~500 MB here
    assert many - few < 40_000, (few, many)


def test_s3_errors_name_the_code_and_the_endpoint_never_the_secret(model_set, hub, tmp_path):
    with SeaweedFS(tmp_path / "sw", identities=True) as sw:
        sw.create_bucket(BUCKET)
        env = seeder_env(hub.url, **sw.env(secret="not-the-secret"))
        run = run_seeder("cache", "du", "--cache", CACHE, "-m", str(model_set["manifest"]), env=env)
        assert run.code == 3, run
        host = sw.endpoint.removeprefix("http://")
        assert "SignatureDoesNotMatch" in run.err and host in run.err, run.err
        run = run_seeder("-m", str(model_set["manifest"]), "-t", str(tmp_path / "t"), "--cache", CACHE, env=env)
        assert run.code == 0, run
        warnings = [e for e in run.events if e.get("level") == "warning"]
        assert len(warnings) == 1 and "HTTP 403" in warnings[0]["error"] and host in warnings[0]["error"], warnings
        assert "not-the-secret" not in run.err + run.out


def test_a_missing_bucket_is_named_as_missing(model_set, hub, seaweed, tmp_path):
    env = seeder_env(hub.url, **seaweed.env())
    run = run_seeder("-m", str(model_set["manifest"]), "-t", str(tmp_path / "t"), "--cache", "s3://no-such-bucket/x",
                     env=env)
    assert run.code == 0, run
    warnings = [e for e in run.events if e.get("level") == "warning"]
    assert len(warnings) == 1 and "the bucket no-such-bucket does not exist" in warnings[0]["error"], warnings
    m = write_manifest(tmp_path / "s3.toml", '[[models]]\nname = "x"\nurl = "s3://nosuchbucket-x/p/k.bin"\n')
    run = run_seeder("lock", "-m", str(m), env=env)
    assert run.code == 3 and "the bucket nosuchbucket-x does not exist" in run.err, run
