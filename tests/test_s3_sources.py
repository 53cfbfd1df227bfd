"""Models kept in your own bucket (``s3 = "s3://…/"`` and ``url = "s3://…"``), against a real SeaweedFS."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import blob, run_seeder, seeder_env, sha256, write_manifest

pytestmark = pytest.mark.seaweed

BUCKET = "acme-models"


@pytest.fixture
def store(seaweed):
    seaweed.create_bucket(BUCKET)
    return seaweed


def _put(store, key: str, data: bytes, how: str = "plain") -> None:
    s3 = store.client()
    if how == "checksum":  # the object's own full-object SHA-256, as S3 computes on upload
        s3.put_object(Bucket=BUCKET, Key=key, Body=data, ChecksumAlgorithm="SHA256")
    elif how == "meta":  # the metadata seeder writes when it uploads
        s3.put_object(Bucket=BUCKET, Key=key, Body=data, Metadata={"sha256": sha256(data)})
    else:  # nothing published: seeder reads the object once to hash it
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)


def _run(store, *args, **extra):
    return run_seeder(*args, env=seeder_env(None, **store.env(), **extra))


def _lock(manifest: Path) -> dict:
    return {m["name"]: m for m in json.loads(manifest.with_suffix(".lock").read_text())["models"]}


def test_a_prefix_and_a_single_object_lock_seed_and_verify(store, tmp_path):
    objects = {"reranker/v3/model.safetensors": (blob(3_000_000, seed=80), "checksum"),
               "reranker/v3/config.json": (b'{"layers": 2}', "meta"),
               "reranker/v3/tokenizer.json": (blob(50_000, seed=81), "plain"),
               "reranker/v3/README.md": (b"# not wanted", "plain"),
               "adapters/sql-lora.safetensors": (blob(500_000, seed=82), "plain")}
    for key, (data, how) in objects.items():
        _put(store, key, data, how)
    m = write_manifest(tmp_path / "models.toml", f"""
[[models]]
name = "reranker"
s3 = "s3://{BUCKET}/reranker/v3/"
include = ["*.safetensors", "*.json"]

[[models]]
name = "adapter"
url = "s3://{BUCKET}/adapters/sql-lora.safetensors"
""")
    run = _run(store, "lock", "-m", str(m))
    assert run.code == 0, run
    lock = _lock(m)
    files = {f["path"]: f for f in lock["reranker"]["files"]}
    assert set(files) == {"model.safetensors", "config.json", "tokenizer.json"}
    for path, f in files.items():
        data = objects[f"reranker/v3/{path}"][0]
        assert (f["key"], f["size"], f["sha256"]) == (f"reranker/v3/{path}", len(data), sha256(data))
        assert f["etag"] == hashlib.md5(data).hexdigest()
    assert any(e["event"] == "hashing object" for e in run.events)  # the plain one was read once
    target = tmp_path / "models"
    run = _run(store, "-m", str(m), "-t", str(target))
    assert run.code == 0, run
    for key, (data, _) in objects.items():
        if key.startswith("adapters/"):
            assert (target / "adapter" / "sql-lora.safetensors").read_bytes() == data
        elif not key.endswith(".md"):
            assert (target / "reranker" / key.split("/")[-1]).read_bytes() == data
    assert not (target / "reranker" / "README.md").exists()
    assert _run(store, "verify", "-m", str(m), "-t", str(target)).code == 0


def test_a_changed_object_is_an_integrity_error_until_refresh(store, tmp_path):
    _put(store, "m/w.bin", blob(200_000, seed=83))
    m = write_manifest(tmp_path / "models.toml", f'[[models]]\nname = "m"\ns3 = "s3://{BUCKET}/m/"\n')
    assert _run(store, "-m", str(m), "-t", str(tmp_path / "a")).code == 0
    new = blob(200_000, seed=84)
    _put(store, "m/w.bin", new)
    run = _run(store, "-m", str(m), "-t", str(tmp_path / "b"))  # the lock still pins the old object
    assert run.code == 1 and f"s3://{BUCKET}/m/w.bin changed" in run.err, run
    assert not (tmp_path / "b" / "m").exists()
    run = _run(store, "refresh", "-m", str(m), "-t", str(tmp_path / "a"))
    assert run.code == 0, run
    assert (tmp_path / "a" / "m" / "w.bin").read_bytes() == new
    assert _lock(m)["m"]["files"][0]["sha256"] == sha256(new)


def test_a_versioned_bucket_pins_the_version_that_was_locked(store, tmp_path):
    s3 = store.client()
    s3.create_bucket(Bucket="versioned")
    s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    old, new = blob(150_000, seed=85), blob(150_000, seed=86)
    first = s3.put_object(Bucket="versioned", Key="w.bin", Body=old)
    m = write_manifest(tmp_path / "models.toml", '[[models]]\nname = "m"\nurl = "s3://versioned/w.bin"\n')
    assert _run(store, "lock", "-m", str(m)).code == 0
    assert _lock(m)["m"]["files"][0]["version_id"] == first["VersionId"]
    s3.put_object(Bucket="versioned", Key="w.bin", Body=new)
    run = _run(store, "-m", str(m), "-t", str(tmp_path / "t"))
    assert run.code == 0, run
    assert (tmp_path / "t" / "m" / "w.bin").read_bytes() == old  # what was locked, not what is latest


def test_status_shows_what_pins_an_s3_model_as_its_revision(store, tmp_path):
    s3 = store.client()
    s3.create_bucket(Bucket="versioned")
    s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    one = blob(10_000, seed=89)
    version = s3.put_object(Bucket="versioned", Key="one.bin", Body=one)["VersionId"]
    plain = blob(10_000, seed=90)
    _put(store, "plain/w.bin", plain)
    _put(store, "many/a.bin", blob(1_000, seed=91))
    _put(store, "many/b.bin", blob(1_000, seed=92))
    m = write_manifest(tmp_path / "models.toml", f"""
[[models]]
name = "versioned"
url = "s3://versioned/one.bin"

[[models]]
name = "plain"
url = "s3://{BUCKET}/plain/w.bin"

[[models]]
name = "many"
s3 = "s3://{BUCKET}/many/"
""")
    target = tmp_path / "t"
    assert _run(store, "-m", str(m), "-t", str(target)).code == 0
    run = _run(store, "status", "--json", "-m", str(m), "-t", str(target))
    assert run.code == 0, run
    revisions = {r["name"]: r["revision"] for r in json.loads(run.out)}
    # The version it was locked at; where the bucket keeps none, the ETag; for several objects, the kind.
    assert revisions == {"versioned": f"version:{version}", "plain": f"etag:{hashlib.md5(plain).hexdigest()}",
                         "many": "s3"}
    table = _run(store, "status", "-m", str(m), "-t", str(target)).out.splitlines()
    assert [line.split()[2] for line in table[1:4]] == [revisions[n] for n in ("versioned", "plain", "many")]


def test_a_download_killed_mid_way_resumes(store, tmp_path):
    data = blob(256 << 20, seed=87)
    _put(store, "big/w.bin", data, "meta")
    m = write_manifest(tmp_path / "models.toml", f'[[models]]\nname = "big"\nurl = "s3://{BUCKET}/big/w.bin"\n')
    assert _run(store, "lock", "-m", str(m)).code == 0
    target = tmp_path / "t"
    env = seeder_env(None, **store.env(), SEEDER_CONNECTIONS="1")
    proc = subprocess.Popen([sys.executable, "-m", "seeder", "-m", str(m), "-t", str(target)], env=env,
                            stderr=subprocess.DEVNULL)
    part = target / ".seeder" / "tmp" / f"sha256-{sha256(data)}.part"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < 8 << 20):
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    kept = part.stat().st_size
    assert 0 < kept < len(data), kept
    run = run_seeder("-m", str(m), "-t", str(target), env=env)
    assert run.code == 0, run
    assert run.events[-1]["bytes_downloaded"] <= len(data) - kept + (1 << 20)  # the rest, not all again
    assert hashlib.sha256((target / "big" / "w.bin").read_bytes()).hexdigest() == sha256(data)


@pytest.mark.parametrize("value, where", [
    ('s3 = "s3://Bad_Bucket/x/"', "field 's3'"),
    ('s3 = "s3:/acme/x"', "field 's3'"),
    ('url = "s3://acme-models/"', "field 'url'"),
    ('url = "s3://acme-models/a.bin"\nmirrors = ["https://x/a.bin"]', "field 'mirrors'"),
])
def test_a_malformed_s3_value_exits_2_naming_the_model_and_field(value, where, store, tmp_path):
    m = write_manifest(tmp_path / "models.toml", f'[[models]]\nname = "m"\n{value}\n')
    run = _run(store, "lock", "-m", str(m))
    assert run.code == 2 and "model 'm'" in run.err and where in run.err, run


@pytest.mark.parametrize("source, named", [
    (f'url = "s3://{BUCKET}/nope/w.bin"', f"s3://{BUCKET}/nope/w.bin"),
    (f's3 = "s3://{BUCKET}/nothing-here/"', f"s3://{BUCKET}/nothing-here/"),
    ('url = "s3://no-such-bucket/w.bin"', "no-such-bucket"),
])
def test_a_missing_bucket_or_key_exits_3_naming_it(source, named, store, tmp_path):
    m = write_manifest(tmp_path / "models.toml", f'[[models]]\nname = "m"\n{source}\n')
    run = _run(store, "-m", str(m), "-t", str(tmp_path / "t"))
    assert run.code == 3 and named in run.err, run


def test_published_checksums_are_read_not_recomputed(store, tmp_path):
    data = blob(100_000, seed=88)
    _put(store, "c/w.bin", data, "checksum")
    head = store.client().head_object(Bucket=BUCKET, Key="c/w.bin", ChecksumMode="ENABLED")
    assert base64.b64decode(head["ChecksumSHA256"]).hex() == sha256(data)
    m = write_manifest(tmp_path / "models.toml", f'[[models]]\nname = "m"\ns3 = "s3://{BUCKET}/c/"\n')
    run = _run(store, "lock", "-m", str(m))
    assert run.code == 0 and not any(e["event"] == "hashing object" for e in run.events), run
