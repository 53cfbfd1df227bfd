"""compose.cluster.yml end to end: three seeder nodes share a SeaweedFS bucket, so the origin serves each byte once.

    TESTCONTAINERS_RYUK_DISABLED=true SEEDER_REQUIRE_DOCKER=1 .venv/bin/python -m pytest tests/test_cluster_compose.py

Marked ``docker`` and ``slow`` like the compose tests of tests/test_docker.py, whose engine fixture, fake
hub container and helpers it reuses: without a usable engine it skips, unless SEEDER_REQUIRE_DOCKER=1.

The fake hub runs on the host network with content unique to this run (so no cache anywhere can make
the test pass vacuously); the nodes reach it at the bridge gateway, as in real use. The images are
built through the cluster file first: all slim, so the build asks the hub nothing, and what the hub
then serves is what the nodes fetched.
Kept small for a 2-core CI machine: one file of 18 MB (large enough for the Range engine to read it
from the bucket in parts) and three small ones.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time

import pytest

from tests.docker import data as d
from tests.test_docker import (  # noqa: F401  (engine, hub_image: fixtures)
    compose_env,
    copy_checkout,
    docker,
    engine,
    events,
    free_port,
    git_blob_sha1,
    http_get,
    hub_image,
    inspect,
    run_hub,
    sh,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NODES = ("node1", "node2", "node3")
BUCKET, PREFIX = "seeder-cache", "cluster/"  # as compose.cluster.yml's SEEDER_CACHE says

# Lists the bucket from inside the cluster's network (the bucket service's image has boto3 and its AWS_* env).
LIST_BUCKET = """
import json, os, boto3
from botocore.config import Config
s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
pages = s3.get_paginator("list_objects_v2").paginate(Bucket=os.environ["BUCKET"])
print(json.dumps({o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}))
"""


def healthz(url: str, within: float = 60) -> int | str:
    """The app's /healthz status, once it answers (it checks the models before it listens)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return http_get(url, timeout=2)[0]
        except OSError as e:
            if time.monotonic() > deadline:
                return f"no answer: {e}"
            time.sleep(0.2)


def test_three_nodes_share_one_bucket_and_the_origin_serves_each_byte_once(engine, hub_image, tmp_path):
    sid = secrets.token_hex(4)
    seed = int(sid, 16)
    data = tmp_path / "hub"
    # A repo (one LFS file, pinned by sha256; two small files, pinned by git blob id) and a plain URL.
    big = d.make_safetensors(tmp_path / "src" / "model.safetensors", seed=seed, tensors=2, floats=9 << 18)
    small = d.tiny_repo_files(seed)
    repo, commit = f"cluster-{sid}/emb", hashlib.sha1(sid.encode()).hexdigest()
    d.add_repo(data, repo, {**small, "model.safetensors": big}, commit)
    gguf = d.make_gguf(data / "files" / f"cluster-{sid}" / "tiny.gguf", seed=seed + 1, tensor_bytes=256 << 10)
    sizes = {f"/{repo}/resolve/{commit}/{p}": len(b) for p, b in small.items()}
    sizes[f"/{repo}/resolve/{commit}/model.safetensors"] = big.stat().st_size
    sizes[f"/files/cluster-{sid}/tiny.gguf"] = gguf.stat().st_size
    set_bytes = sum(sizes.values())
    blobs = {f"{PREFIX}blobs/sha256/{d.sha256_file(p)}": p.stat().st_size for p in (big, gguf)}
    blobs.update({f"{PREFIX}blobs/gitsha1/{git_blob_sha1(data / 'repos' / repo / p)}": len(b)
                  for p, b in small.items()})

    with run_hub(hub_image, data, engine) as hub:
        ctx = copy_checkout(tmp_path / "ctx")
        (ctx / "deploy").mkdir(exist_ok=True)
        (ctx / "deploy" / "models.toml").write_text(
            f'[[models]]\nname = "emb"\nrepo = "{repo}"\nrevision = "{commit}"\n\n'
            f'[[models]]\nname = "llm"\nurl = "{hub.url}/files/cluster-{sid}/tiny.gguf"\n'
            f'sha256 = "{d.sha256_file(gguf)}"\nsize = {gguf.stat().st_size}\n')
        env = compose_env(HF_ENDPOINT=hub.url, SEEDER_ALLOW_HTTP="1", MANIFEST_DIR="deploy",
                          APP_PORT=str(free_port()))
        project = f"seedercluster{sid}"

        def compose(*args: str, check: bool = True, timeout: float = 600):
            return sh("docker", "compose", "--ansi", "never", "-p", project, "--project-directory", ctx,
                      "-f", ctx / "compose.cluster.yml", *args, check=check, timeout=timeout, env=env)

        def container(service: str) -> dict | None:
            ids = compose("ps", "-a", "-q", service).stdout.split()
            return inspect(ids[0]) if ids else None

        def logs(service: str) -> str:
            if (c := container(service)) is None:
                return "(no container)"
            proc = docker("logs", c["Id"], check=False)
            return proc.stdout + proc.stderr

        try:
            started = time.monotonic()
            compose("build")
            built = time.monotonic()
            assert hub.log() == []  # no image carries models: the nodes fill their volumes themselves
            # Not --wait: that would wait for the app's first healthcheck, 10 s after it starts. `up -d`
            # returns once the app has started, which it does only after every node exited 0.
            up = compose("up", "-d", check=False, timeout=300)
            report = "\n".join(f"--- {s}\n{logs(s)[-3000:]}" for s in ("bucket", *NODES))
            assert up.returncode == 0, f"{up.stderr[-3000:]}\n{report}"
            ran = time.monotonic()

            # every node ran to completion (and so the app started: it depends on all three)
            for service in ("bucket", *NODES):
                state = (container(service) or {}).get("State")
                assert state and (state["Status"], state["ExitCode"]) == ("exited", 0), f"{service}: {state}\n{report}"

            # the origin served each file in full, and about once in all: not once per node
            fetched = hub.file_bytes()
            assert set(fetched) == set(sizes), fetched
            assert all(fetched[path] >= size for path, size in sizes.items()), fetched
            assert sum(fetched.values()) <= 1.05 * set_bytes, (fetched, set_bytes, report)

            # ... which is what the nodes say: each has the whole set, most of it from the bucket
            summaries = {s: [e for e in events(logs(s)) if e.get("event") == "summary"][-1] for s in NODES}
            assert sum(e["bytes_downloaded"] for e in summaries.values()) <= 1.05 * set_bytes, summaries
            assert sum(e.get("bytes_from_cache", 0) for e in summaries.values()) >= 1.9 * set_bytes, summaries

            # the bucket holds every blob under its documented key, and no lease is left behind
            listed = json.loads(compose("run", "--rm", "--no-deps", "-T", "--entrypoint", "python", "bucket",
                                        "-c", LIST_BUCKET).stdout.strip().splitlines()[-1])
            assert listed == blobs, listed

            # the app runs on node1's volume
            assert healthz(f"http://127.0.0.1:{env['APP_PORT']}/healthz") == 200
            status, listed_models = http_get(f"http://127.0.0.1:{env['APP_PORT']}/models")
            assert status == 200 and sorted(m["name"] for m in listed_models) == ["emb", "llm"]
            print(f"cluster: build {built - started:.0f} s, up {ran - built:.0f} s; "
                  f"hub served {sum(fetched.values())} bytes for a set of {set_bytes}")
        finally:
            compose("down", "-v", "--remove-orphans", "--rmi", "local", "--timeout", "5", check=False)
