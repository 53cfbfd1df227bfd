"""Gated, private and missing repos: one line that says what to do, exit 3, never the token.

The hub answers 401 for a missing repo as for a private one (so as not to tell which exist), 401 for a
gated repo asked without a token and 403 with a token that was not granted access; what the refusal
means is in ``X-Error-Code`` (``GatedRepo``, ``RepoNotFound``), so that is what seeder reads, while
locking (huggingface_hub's API calls) and while seeding from a lock (its own downloads) alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import blob, run_seeder, write_manifest
from tests.fakehub import FakeHub

TOKEN = "hf_GatedTestToken0123456789abcdef"
WRONG = "hf_NotGrantedToken9876543210fedcba"
FILES = {"config.json": b'{"hidden_size": 8}', "model.safetensors": blob(3 << 20, seed=4)}
# The parts path for the large file: its refusal must read the same as a single stream's.
PARTS = {"SEEDER_PART_SIZE": "256K", "SEEDER_MULTIPART_MIN": "1M", "SEEDER_CONNECTIONS": "4"}


def gated(hub, repo: str) -> str:
    return (f"{repo} is gated: accept its terms at {hub.url}/{repo} and set HF_TOKEN "
            "(it must belong to an account that accepted them)")


def gated_with_token(hub, repo: str) -> str:
    return (f"{repo} is gated and HF_TOKEN has no access to it: accept its terms at {hub.url}/{repo} "
            "(HF_TOKEN must belong to an account that accepted them)")


def missing(hub, repo: str) -> str:
    return f"{repo} not found on {hub.url}: it does not exist, or it is private and needs HF_TOKEN"


def missing_with_token(hub, repo: str) -> str:
    return f"{repo} not found on {hub.url}: it does not exist, or it is private and HF_TOKEN cannot read it"


def _manifest(tmp_path: Path, repo: str, file: str = "config.json") -> Path:
    return write_manifest(tmp_path / "models.toml", f'[[models]]\nname = "m"\nrepo = "{repo}"\ninclude = ["{file}"]\n')


def _refused(run, message: str, *secrets: str) -> None:
    """Exit 3, and the run's last word is ``message``, one line, with no token in anything it printed."""
    assert run.code == 3, run
    last = run.events[-1]
    assert last["level"] == "error" and last["exit_code"] == 3, last
    assert last["event"] == message, last["event"]
    assert "\n" not in last["event"]
    for secret in secrets:
        assert secret not in run.err + run.out


# -- while locking: huggingface_hub's API calls ------------------------------------------------------------

def test_locking_a_gated_repo_without_a_token_or_with_one_not_granted(tmp_path):
    # The real hub shows a gated repo's metadata to anyone; a hub that gates its API too is the harder case.
    with FakeHub(token=TOKEN, require_token_everywhere=True) as hub:
        hub.add_repo("org/g", FILES, gated=True)
        m = _manifest(tmp_path, "org/g")
        _refused(run_seeder("lock", "-m", str(m), hub=hub), f"m: {gated(hub, 'org/g')}")
        _refused(run_seeder("lock", "-m", str(m), hub=hub, HF_TOKEN=WRONG), f"m: {gated_with_token(hub, 'org/g')}",
                 WRONG)
        run = run_seeder("lock", "-m", str(m), hub=hub, HF_TOKEN=TOKEN)
        assert run.code == 0 and TOKEN not in run.err + run.out, run


def test_locking_a_missing_or_private_repo(hub, tmp_path):
    hub.token = TOKEN
    hub.add_repo("org/secret", FILES, private=True)
    for repo in ("org/nope", "org/secret"):  # the same answer: which private repos exist is not told
        m = _manifest(tmp_path, repo)
        _refused(run_seeder("lock", "-m", str(m), hub=hub), f"m: {missing(hub, repo)}")
    m = _manifest(tmp_path, "org/nope")
    _refused(run_seeder("lock", "-m", str(m), hub=hub, HF_TOKEN=TOKEN), f"m: {missing_with_token(hub, 'org/nope')}",
             TOKEN)
    run = run_seeder("lock", "-m", str(_manifest(tmp_path, "org/secret")), hub=hub, HF_TOKEN=TOKEN)
    assert run.code == 0, run


# -- while seeding from a lock: seeder's own downloads -----------------------------------------------------

@pytest.mark.parametrize("file", ["config.json", "model.safetensors"])
def test_seeding_a_gated_repo_from_a_lock(file, hub, tmp_path):
    hub.token = TOKEN
    hub.add_repo("org/g", FILES, gated=True)
    m = _manifest(tmp_path, "org/g", file)
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0  # its metadata is public, as on the real hub
    hub.clear_log()
    _refused(run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, **PARTS), f"m/{file}: {gated(hub, 'org/g')}")
    _refused(run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, HF_TOKEN=WRONG, **PARTS),
             f"m/{file}: {gated_with_token(hub, 'org/g')}", WRONG)
    statuses = [(r.status, r.headers.get("authorization") is not None) for r in hub.requests if r.kind == "resolve"]
    # without a token 401, with the wrong one 403; and no API call: seeding from a lock needs none
    assert set(statuses) == {(401, False), (403, True)} and not [r for r in hub.requests if r.kind == "api"], statuses
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub, HF_TOKEN=TOKEN, **PARTS)
    assert run.code == 0 and (tmp_path / "t" / "m" / file).read_bytes() == FILES[file], run


def test_seeding_from_a_lock_whose_repo_is_gone(hub, tmp_path):
    hub.add_repo("org/gone", FILES)
    m = _manifest(tmp_path, "org/gone")
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0
    with FakeHub(token=TOKEN) as empty:  # the same lock, and a hub that no longer has the repo
        _refused(run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=empty),
                 f"m/config.json: {missing(empty, 'org/gone')}")
        _refused(run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=empty, HF_TOKEN=TOKEN),
                 f"m/config.json: {missing_with_token(empty, 'org/gone')}", TOKEN)
        assert [r.status for r in empty.requests] == [401, 404]  # no API call: the lock was used as it is


# -- the code decides, not the status ------------------------------------------------------------------------

@pytest.mark.parametrize("status", [401, 403, 404])
def test_the_error_code_decides_not_the_status(status, hub, tmp_path):
    hub.add_repo("org/m", FILES)
    m = _manifest(tmp_path, "org/m")
    hub.add_fault("/api/models/org/m/", "status", api=True, code=status, headers={"X-Error-Code": "RepoNotFound"})
    _refused(run_seeder("lock", "-m", str(m), hub=hub), f"m: {missing(hub, 'org/m')}")
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0
    hub.add_fault("/config.json", "status", code=status, headers={"X-Error-Code": "GatedRepo"})
    _refused(run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub), f"m/config.json: {gated(hub, 'org/m')}")
    hub.add_fault("/config.json", "status", code=status, headers={"X-Error-Code": "RepoNotFound"})
    _refused(run_seeder("-m", str(m), "-t", str(tmp_path / "t"), hub=hub), f"m/config.json: {missing(hub, 'org/m')}")


def test_the_repo_is_read_off_a_resolve_url():
    from seeder.fetch.retry import _repo_of
    from seeder.settings import Network

    hub, mirror = Network(endpoint="https://hub.example"), Network(endpoint="https://mirror.example/hf")
    assert _repo_of("https://hub.example/org/m/resolve/main/dir/resolve/f.bin", hub) == "org/m"
    assert _repo_of("https://hub.example/gpt2/resolve/abc/config.json", hub) == "gpt2"  # a legacy id
    assert _repo_of("https://hub.example/org/resolve/resolve/main/f", hub) == "org/resolve"
    assert _repo_of("https://mirror.example/hf/org/m/resolve/main/f", mirror) == "org/m"
    assert _repo_of("https://mirror.example/org/m/resolve/main/f", mirror) is None
    assert _repo_of("https://hub.example/api/models/org/m", hub) is None


def test_a_refused_model_stops_asking_for_its_other_files(hub, tmp_path):
    """One refusal says it all: the model's other files are not asked for, each to be refused in turn."""
    hub.token = TOKEN
    files = {f"shard-{i}.json": b'{"i": %d}' % i for i in range(12)}
    hub.add_repo("org/g", files, gated=True)
    m = write_manifest(tmp_path / "models.toml", '[[models]]\nname = "m"\nrepo = "org/g"\ninclude = ["shard-*"]\n')
    assert run_seeder("lock", "-m", str(m), hub=hub).code == 0
    hub.clear_log()
    run = run_seeder("-m", str(m), "-t", str(tmp_path / "t"), "--jobs", "2", hub=hub)
    _refused(run, f"m/shard-0.json: {gated(hub, 'org/g')}")
    resolves = [r for r in hub.requests if r.kind == "resolve"]
    # The two in flight, and what those two workers took up before the refusal was read: not the dozen.
    assert 1 <= len(resolves) <= 4, [r.path for r in resolves]
    assert len([e for e in run.events if e["level"] == "error"]) == len(resolves), run.err
