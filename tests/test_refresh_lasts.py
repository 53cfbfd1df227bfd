"""A refresh lasts (#21): where the manifest's directory is read-only (a manifest baked into an image, a
ConfigMap), `seeder refresh` keeps its lock in the target, and later plain runs keep the refreshed
models until the lock they are given changes; then that lock wins. The Compose version of this is in
tests/test_docker.py (test_a_refresh_in_compose_lasts_until_the_image_brings_a_new_lock)."""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import blob, run_seeder
from tests.fakehub import DEFAULT_GITATTRIBUTES


def version(n: int) -> dict[str, bytes]:
    return {".gitattributes": DEFAULT_GITATTRIBUTES, "config.json": b'{"v": %d}' % n,
            "model.safetensors": blob(200_000, seed=40 + n)}


@contextmanager
def read_only(path: Path):
    """``path`` read-only for this process, root included (a read-only bind mount), as an image's is."""
    if os.geteuid() == 0:
        if subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)], capture_output=True).returncode:
            pytest.skip("root, but no bind mounts here to make a read-only directory")
        try:
            yield
        finally:
            subprocess.run(["umount", str(path)], check=True)
    else:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)


@pytest.fixture
def project(hub, tmp_path):
    """A manifest following a branch, its committed lock at the first commit, and a target seeded from it."""
    first = hub.add_repo("org/m", version(1))
    conf = tmp_path / "conf"
    conf.mkdir()
    manifest = conf / "models.toml"
    manifest.write_text('[[models]]\nname = "m"\nrepo = "org/m"\nrevision = "main"\ninclude = ["*.json", "*.safetensors"]\n')
    assert run_seeder("lock", "-m", str(manifest), hub=hub).code == 0
    target = tmp_path / "t"
    assert run_seeder("-m", str(manifest), "-t", str(target), hub=hub).code == 0
    return {"manifest": manifest, "conf": conf, "target": target, "first": first,
            "args": ["-m", str(manifest), "-t", str(target)]}


def installed(target: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (target / "m").iterdir()}


def lock_event(run) -> dict:
    [event] = [e for e in run.events if e["event"] == "using lock"]
    return event


def test_a_refresh_lasts_until_the_given_lock_changes(project, hub):
    target, args, conf = project["target"], project["args"], project["conf"]
    committed = (conf / "models.lock").read_bytes()
    second = hub.add_repo("org/m", version(2))  # main moves on
    with read_only(conf):
        run = run_seeder("refresh", *args, hub=hub)
        assert run.code == 0, run
        assert installed(target) == {k: v for k, v in version(2).items() if k != ".gitattributes"}
        kept = json.loads((target / ".seeder" / "models.lock").read_text())
        assert kept["models"][0]["commit"] == second
        refreshed = run

        # A plain run given the same committed lock keeps the refreshed models: no request, no revert;
        # and says which lock it used, and why.
        hub.clear_log()
        for extra in ([], ["--locked"]):  # the Kubernetes init container runs `seed --locked`
            run = run_seeder(*extra, *args, hub=hub)
            assert run.code == 0, run
            assert installed(target)["config.json"] == b'{"v": 2}', f"{extra}: reverted to the given lock"
            assert lock_event(run)["path"] == str(target / ".seeder" / "models.lock")
            assert "the target's own lock: `seeder refresh` kept it" in lock_event(run)["why"]
            assert "runs keep it until that lock changes" in lock_event(run)["why"]
        assert installed(target)["config.json"] == b'{"v": 2}'
        assert hub.requests == []
        assert any("later runs keep it" in e["event"] for e in refreshed.events if e["level"] == "warning")
        assert run_seeder("verify", *args).code == 0  # checked against the lock the target runs on

        # status says the target is ahead of the given lock, and how to make that permanent
        status = run_seeder("status", *args)
        assert status.code == 0, status
        assert f"m: ahead of {conf / 'models.lock'}, which pins {project['first'][:12]}" in status.out
        assert "seeder lock --from-target --output - > models.lock && git commit" in status.out
        assert "docker compose run --rm -T seeder lock --from-target --output - > models.lock" in status.out
        [row] = json.loads(run_seeder("status", "--json", *args).out)
        assert (row["state"], row["commit"], row["ahead_of"]) == ("complete", second, project["first"])

    # The image is rebuilt with a new committed lock (main moved again): that lock wins.
    third = hub.add_repo("org/m", version(3))
    assert run_seeder("lock", "--upgrade", "-m", str(project["manifest"]), hub=hub).code == 0
    assert (conf / "models.lock").read_bytes() != committed
    with read_only(conf):
        run = run_seeder(*args, hub=hub)
        assert run.code == 0, run
        assert lock_event(run)["path"] == str(conf / "models.lock")
        assert "changed since `seeder refresh` kept it in the target" in lock_event(run)["why"]
        assert "the given lock wins" in lock_event(run)["why"]
        assert installed(target)["config.json"] == b'{"v": 3}'
        assert not (target / ".seeder" / "models.lock").exists()  # superseded: gone
        status = run_seeder("status", "--json", *args)
        assert json.loads(status.out)[0]["commit"] == third and json.loads(status.out)[0]["ahead_of"] is None
        assert "ahead" not in run_seeder("status", *args).out


def test_a_refresh_from_no_lock_then_a_committed_lock_wins(project, hub):
    """The given lock may be missing at refresh time; one that appears later is a change too."""
    target, args, conf = project["target"], project["args"], project["conf"]
    committed = (conf / "models.lock").read_bytes()
    (conf / "models.lock").unlink()
    hub.add_repo("org/m", version(2))
    with read_only(conf):
        assert run_seeder("refresh", *args, hub=hub).code == 0
        hub.clear_log()
        run = run_seeder(*args, hub=hub)
        assert run.code == 0 and hub.requests == [] and installed(target)["config.json"] == b'{"v": 2}', run
        # --locked counts no lock the target keeps when none is committed, as before
        run = run_seeder("--locked", *args, hub=hub)
        assert run.code == 2 and "models.lock is missing" in run.err, run
    (conf / "models.lock").write_bytes(committed)
    with read_only(conf):
        run = run_seeder(*args, hub=hub)
        assert run.code == 0, run
        assert "went since" not in lock_event(run)["why"] and "changed since" in lock_event(run)["why"]
        assert installed(target)["config.json"] == b'{"v": 1}'


def test_lock_from_target_makes_the_refresh_permanent(project, hub):
    target, args, conf = project["target"], project["args"], project["conf"]
    second = hub.add_repo("org/m", version(2))
    with read_only(conf):
        assert run_seeder("refresh", *args, hub=hub).code == 0
        # In the container: the lock on stdout, to redirect into the checkout's models.lock.
        printed = run_seeder("lock", "--from-target", "--output", "-", *args)
        assert printed.code == 0, printed
        assert json.loads(printed.out)["models"][0]["commit"] == second and "based_on" not in printed.out
        # Beside a read-only manifest it cannot write, and says what can.
        run = run_seeder("lock", "--from-target", *args)
        assert run.code == 4 and "read-only" in run.err and "--output - prints the lock" in run.err, run
    (conf / "models.lock").write_text(printed.out)  # committed, the image rebuilt with it
    with read_only(conf):
        hub.clear_log()
        run = run_seeder(*args, hub=hub)
        assert run.code == 0, run
        assert lock_event(run)["path"] == str(conf / "models.lock") and "has been committed" in lock_event(run)["why"]
        assert hub.requests == [] and installed(target)["config.json"] == b'{"v": 2}'
        summary = [e for e in run.events if e["event"] == "summary"][-1]
        assert summary["bytes_downloaded"] == 0 and summary["bytes_reused"] > 0  # the warm path: nothing moved
        assert not (target / ".seeder" / "models.lock").exists()
        assert "ahead" not in run_seeder("status", *args).out
        # Nothing of its own left to take: a clear refusal, exit 2.
        run = run_seeder("lock", "--from-target", *args)
        assert run.code == 2 and "not on a lock of its own" in run.err, run

    # On the host, where the manifest's directory is writable, --from-target writes models.lock itself.
    third = hub.add_repo("org/m", version(3))
    with read_only(conf):
        assert run_seeder("refresh", *args, hub=hub).code == 0
        status = run_seeder("status", *args)
        assert "ahead of" in status.out
    status = run_seeder("status", *args)
    assert f"make it permanent: seeder lock --from-target -m {project['manifest']} -t {target} && git commit" \
        in status.out, status.out
    run = run_seeder("lock", "--from-target", *args)
    assert run.code == 0, run
    assert json.loads((conf / "models.lock").read_text())["models"][0]["commit"] == third
    assert not (target / ".seeder" / "models.lock").exists()
    assert "ahead" not in run_seeder("status", *args).out


def test_a_refresh_beside_a_writable_manifest_rewrites_models_lock(project, hub):
    """Nothing to keep in the target: the refreshed lock is the given one, ready to commit."""
    second = hub.add_repo("org/m", version(2))
    assert run_seeder("refresh", *project["args"], hub=hub).code == 0
    assert json.loads((project["conf"] / "models.lock").read_text())["models"][0]["commit"] == second
    assert not (project["target"] / ".seeder" / "models.lock").exists()
    run = run_seeder(*project["args"], hub=hub)
    assert lock_event(run)["why"] == "the lock beside the manifest"
    assert "ahead" not in run_seeder("status", *project["args"]).out


@pytest.mark.parametrize("bad", ["--upgrade", "--locked"])
def test_lock_from_target_refuses_flags_that_contradict_it(bad, project):
    run = run_seeder("lock", "--from-target", bad, *project["args"])
    assert run.code == 2 and "--from-target" in run.err and "Traceback" not in run.err, run
    run = run_seeder("lock", "--output", "-", *project["args"])
    assert run.code == 2 and "--output goes with --from-target" in run.err, run


def test_a_damaged_lock_in_the_target_gives_way_to_the_given_lock(project, hub):
    target, args, conf = project["target"], project["args"], project["conf"]
    hub.add_repo("org/m", version(2))
    with read_only(conf):
        assert run_seeder("refresh", *args, hub=hub).code == 0
        (target / ".seeder" / "models.lock").write_text("{half a lock")
        run = run_seeder(*args, hub=hub)
        assert run.code == 0 and installed(target)["config.json"] == b'{"v": 1}', run
        assert any("kept in the target is unreadable" in e["event"] for e in run.events if e["level"] == "warning")
        assert lock_event(run)["path"] == str(conf / "models.lock")
