"""``seeder --locked --prune``: the committed lock alone decides what stays in a target; nobody is asked."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import seeder
from seeder.install.prune import prune
from seeder.spec import lock as lockfile
from seeder.spec.lock import Lock
from seeder.store import Target
from tests.conftest import blob, run_seeder, sha256
from tests.fakehub import DEFAULT_GITATTRIBUTES

V1 = {".gitattributes": DEFAULT_GITATTRIBUTES, "config.json": b'{"v": 1}', "model.safetensors": blob(400_000, seed=31)}
V2 = {**V1, "config.json": b'{"v": 2}'}
X = blob(50_000, seed=32)


def _seeded(hub, tmp_path: Path) -> tuple[Path, Path]:
    hub.add_repo("org/m", V1)
    url = hub.add_file("x/x.bin", X)
    manifest = tmp_path / "models.toml"
    manifest.write_text(f'[[models]]\nname = "m"\nrepo = "org/m"\n\n'
                        f'[[models]]\nname = "x"\nurl = "{url}"\nsha256 = "{sha256(X)}"\n')
    target = tmp_path / "models"
    assert run_seeder("lock", "-m", str(manifest), hub=hub).code == 0
    assert run_seeder("-m", str(manifest), "-t", str(target), hub=hub).code == 0
    return manifest, target


def _installed(target: Path) -> list[str]:
    return [m["name"] for m in seeder.installed(target)]


def test_locked_prune_drops_a_model_the_committed_lock_dropped_and_asks_no_one(hub, tmp_path):
    manifest, target = _seeded(hub, tmp_path)
    # What a colleague commits: models.toml and models.lock without x.
    assert run_seeder("remove", "x", "-m", str(manifest)).code == 0
    hub.clear_log()

    kept = run_seeder("--locked", "-m", str(manifest), "-t", str(target), hub=hub)
    assert kept.code == 0, kept
    assert (target / "x" / "x.bin").read_bytes() == X  # a plain seed leaves it, as documented

    pruned = run_seeder("--locked", "--prune", "-m", str(manifest), "-t", str(target), hub=hub)
    assert pruned.code == 0, pruned
    assert [e["model"] for e in pruned.events if e["event"] == "removed"] == ["x"]
    assert not os.path.lexists(target / "x") and not (target / ".seeder" / "versions" / "x").exists()
    assert _installed(target) == ["m"]
    assert hub.requests == []  # neither run asked the hub anything: the committed lock was enough
    assert (target / "m" / "model.safetensors").read_bytes() == V1["model.safetensors"]
    assert run_seeder("verify", "-m", str(manifest), "-t", str(target)).code == 0
    status = run_seeder("status", "--json", "-m", str(manifest), "-t", str(target))
    assert "extra" not in status.out, status.out


def test_prune_deletes_versions_a_warm_target_kept_and_leaves_the_current_one(hub, tmp_path):
    manifest, target = _seeded(hub, tmp_path)
    versions = target / ".seeder" / "versions"
    current = Path(os.path.realpath(target / "m"))
    # A replaced version whose delete failed (NFS keeps a directory whose file a reader holds open), and one a
    # run killed before it recorded its first install of a model left behind.
    shutil.copytree(current, versions / "m" / "0123456789abcdef")
    shutil.copytree(current, versions / "ghost" / "0123456789abcdef")
    hub.clear_log()

    warm = run_seeder("--locked", "-m", str(manifest), "-t", str(target), hub=hub)
    assert warm.code == 0 and (versions / "m" / "0123456789abcdef").exists(), warm  # a warm run never looks

    pruned = run_seeder("--locked", "--prune", "--grace", "0.2", "-m", str(manifest), "-t", str(target), hub=hub)
    assert pruned.code == 0, pruned
    assert sorted(p.name for p in (versions / "m").iterdir()) == [current.name]
    assert not (versions / "ghost").exists() and not os.path.lexists(target / "ghost")
    waited = [e for e in pruned.events if e["event"] == "keeping replaced versions for readers"]
    assert waited and waited[0]["models"] == ["m"] and waited[0]["seconds"] == 0.2, pruned.events
    assert [e["versions"] for e in pruned.events if e["event"] == "pruned old versions"] == [1]
    assert hub.requests == []
    assert run_seeder("verify", "-m", str(manifest), "-t", str(target)).code == 0

    again = run_seeder("--locked", "--prune", "-m", str(manifest), "-t", str(target), hub=hub)
    assert again.code == 0 and not [e for e in again.events if e["event"] in ("removed", "pruned old versions")]


def test_prune_leaves_a_target_another_lock_was_installed_in_since(hub, tmp_path):
    """Two fill Jobs, the older lock's finishing last: it must not delete what the newer one installed."""
    manifest, target = _seeded(hub, tmp_path)
    newer = lockfile.read(tmp_path / "models.lock")
    older = Lock(models=tuple(m for m in newer.models if m.name == "m"))
    prune(older, Target(target), grace=0)
    assert (target / "x" / "x.bin").read_bytes() == X and _installed(target) == ["m", "x"]


def test_a_failed_seed_prunes_nothing(hub, tmp_path):
    manifest, target = _seeded(hub, tmp_path)
    hub.add_repo("org/m", V2)
    assert run_seeder("lock", "--upgrade", "-m", str(manifest), hub=hub).code == 0
    (target / ".seeder" / "versions" / "ghost").mkdir()
    # Offline, the new config.json is nowhere: the install fails, and the version the link points at stays.
    run = run_seeder("--locked", "--prune", "--offline", "-m", str(manifest), "-t", str(target), hub=hub)
    assert run.code == 3, run
    assert (target / "m" / "config.json").read_bytes() == V1["config.json"]
    assert (target / ".seeder" / "versions" / "ghost").exists()
    assert not [e for e in run.events if e["event"] in ("removed", "pruned old versions")]
