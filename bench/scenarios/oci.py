"""OCI registry: pulling and pushing one 1 GiB model, seeder against oras-py and skopeo, on one local
registry (Debian's docker-registry, distribution 2.8: tests/registry.py), runs interleaved; and pushing an
unchanged set again.

- Push: a seeded target's model (one 1 GiB safetensors file) by ``seeder push`` and by oras-py's
  ``OrasClient.push``, into an emptied registry before every run (untimed).
- Re-push: ``seeder push`` of the same target to a registry that holds it: the bytes it uploaded.
- Pull: the artifact seeder pushed, by seeder (``oci =`` in the manifest, lock present, a fresh target), by
  oras-py's ``OrasClient.pull`` and by ``skopeo copy docker://… dir:``, each into a fresh directory.

Skipped with a note when docker-registry, skopeo or oras-py is missing.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import time

from bench.common import SEEDER, MiB, first_line, say
from bench.harness import Bench
from bench.measure import Row, timed
from bench.prepare import url_model, write_random

SIZE = 1024 * MiB
SEEDER_PULL, ORAS_PULL, SKOPEO_PULL = "seeder (oci = …)", "oras-py pull", "skopeo copy … dir:"
SEEDER_PUSH, ORAS_PUSH = "seeder push", "oras-py push"

ORAS_PUSH_SCRIPT = textwrap.dedent("""
    import sys
    import oras.client
    client = oras.client.OrasClient(hostname=sys.argv[1], insecure=True)
    resp = client.push(target=sys.argv[2], files=["model.safetensors"])
    sys.exit(0 if resp.status_code == 201 else 1)
""")
ORAS_PULL_SCRIPT = textwrap.dedent("""
    import sys
    import oras.client
    client = oras.client.OrasClient(hostname=sys.argv[1], insecure=True)
    client.pull(target=sys.argv[2], outdir=sys.argv[3])
""")


def oci(bench: Bench) -> None:
    try:
        import oras.client  # noqa: F401
        from tests.registry import Registry, registry_binary, skopeo_binary
        registry_binary(), skopeo_binary()
    except (ImportError, RuntimeError, _skipped()) as e:
        bench.notes.append(f"OCI registry: skipped ({str(e).splitlines()[0]}).")
        say(f"oci: skipped ({e})")
        return
    started = time.monotonic()
    work = bench.work / "oci"
    reg = Registry(work / "registry").start()
    try:
        source = _seeded_target(bench, work)
        _push(bench, reg, source, work)
        _pull(bench, reg, work)
        bench.remarks.setdefault("oci-push", []).append(
            f"Registry: Debian's docker-registry `{first_line([registry_binary(), '--version'])}` on 127.0.0.1, "
            "plain http, no auth, storage in the work directory.")
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    took = time.monotonic() - started
    bench.remarks.setdefault("oci-push", []).append(f"This part of the benchmark took {took / 60:.1f} min, "
                                                    "set-up included.")
    say(f"oci: {took:.0f} s in all")


def _skipped() -> type[BaseException]:
    """What tests/registry.py raises for a missing binary: pytest's skip."""
    try:
        import pytest
        return pytest.skip.Exception
    except ImportError:
        return RuntimeError


def _seeded_target(bench: Bench, work):
    blob = work / "blob" / "model.safetensors"
    write_random(blob, SIZE)
    url = bench.hub.add_file("oci/model.safetensors", blob)
    manifest = bench.manifest("oci-source", url_model("big", url, blob))
    target = work / "source"
    sample = timed([*SEEDER, "-m", str(manifest), "-t", str(target), "-q"], env=bench.env,
                   log=bench.logs / "oci-source.log")
    if sample.code:
        raise RuntimeError(f"seeding the push's source failed (see {bench.logs / 'oci-source.log'})")
    return manifest, target


def _empty(reg):
    def clear(_i: int) -> None:
        reg.kill()
        shutil.rmtree(reg.storage, ignore_errors=True)
        reg.storage.mkdir(parents=True)
        reg.restart()
    return clear


def _push(bench: Bench, reg, source, work) -> None:
    manifest, target = source
    seeder_cmd = [*SEEDER, "push", f"{reg.host}/bench", "--tag", "v1", "-m", str(manifest), "-t", str(target),
                  "--log-format", "json"]
    oras_cmd = [sys.executable, "-c", ORAS_PUSH_SCRIPT, reg.host, f"{reg.host}/bench-oras/big:v1"]
    version = first_line([sys.executable, "-c", "import oras; print(oras.__version__)"])

    def both() -> None:
        bench.repeat(Row("oci-push", SEEDER_PUSH, bytes=SIZE, files=1, note="HEAD first; blobs over 64 MiB "
                         "in chunks (SEEDER_PUSH_CHUNK); the registry checks each digest"), bench.args.runs,
                     lambda i: timed(seeder_cmd, env=bench.env, log=bench.logs / f"oci-push-seeder-{i + 1}.log"),
                     _empty(reg))
        bench.repeat(Row("oci-push", ORAS_PUSH, bytes=SIZE, files=1, note=f"oras {version}: one PUT per blob, "
                         "the blob read into memory first"),
                     bench.args.runs,
                     lambda i: timed(oras_cmd, env=bench.env, cwd=target / "big",
                                     log=bench.logs / f"oci-push-oras-{i + 1}.log"),
                     _empty(reg))

    bench.interleaved(both)
    _empty(reg)(0)
    first = timed(seeder_cmd, env=bench.env, log=bench.logs / "oci-push-first.log")
    log = bench.logs / "oci-repush.log"
    again = timed(seeder_cmd, env=bench.env, log=log)
    uploaded = _event(log, "push").get("uploaded")
    row = Row("oci-push", "seeder push, unchanged set again", files=1,
              note=f"uploaded {uploaded} bytes" if uploaded is not None else "no summary event")
    row.samples.append(again)
    if first.code or again.code:
        row.note += f"; exit {first.code}, {again.code}"
    bench.rows.append(row)
    bench.remarks.setdefault("oci-push", []).append(
        f"Re-push of an unchanged set: seeder uploaded {uploaded} bytes in {again.seconds:.2f} s (a HEAD per blob).")


def _pull(bench: Bench, reg, work) -> None:
    ref = f"{reg.host}/bench/big:v1"
    manifest = bench.manifest("oci-pull", f'[[models]]\nname = "big"\noci = "{ref}"\n')
    out = {name: work / "pull" / name for name in ("seeder", "oras", "skopeo")}
    seeder_cmd = [*SEEDER, "-m", str(manifest), "-t", str(out["seeder"]), "-q"]
    oras_cmd = [sys.executable, "-c", ORAS_PULL_SCRIPT, reg.host, ref, str(out["oras"])]
    from tests.registry import skopeo_binary
    skopeo_cmd = [skopeo_binary(), "copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{out['skopeo']}"]
    skopeo_version = first_line([skopeo_binary(), "--version"])
    env = {**bench.env, "SEEDER_CONNECTIONS": str(bench.args.connections)}

    def three() -> None:
        for name, key, cmd, note, run_env in (
                (SEEDER_PULL, "seeder", seeder_cmd, f"{bench.args.connections} Range connections, sha256 checked, "
                 "fsync and atomic install", env),
                (ORAS_PULL, "oras", oras_cmd, "one stream", bench.env),
                (SKOPEO_PULL, "skopeo", skopeo_cmd, f"{skopeo_version}; one stream, digest checked", bench.env)):
            bench.repeat(Row("oci-pull", name, bytes=SIZE, files=1, note=note), bench.args.runs,
                         lambda i, cmd=cmd, key=key, run_env=run_env: timed(
                             cmd, env=run_env, log=bench.logs / f"oci-pull-{key}-{i + 1}.log"),
                         bench.fresh(out[key]) if key != "skopeo" else _absent(out[key]))

    bench.interleaved(three)


def _absent(path):
    """skopeo's dir: transport wants a directory that is empty or absent."""
    def clear(_i: int) -> None:
        shutil.rmtree(path, ignore_errors=True)
    return clear


def _event(log, name: str) -> dict:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                return event
    return {}

