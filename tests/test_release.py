"""The release: a wheel and an sdist named model-seeder (`seeder` on PyPI is an unrelated project) that
twine accepts, with the schema inside, and a wheel that installs into a clean venv as the `seeder`
command. Builds and installs for real, dependencies from the package index: about a minute."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

import seeder
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

DISTRIBUTION = "model-seeder"
SCHEMA = "seeder/spec/models.schema.json"


def _run(*cmd, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (cmd, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """What `python -m build` makes of the checkout: from a copy of what a build reads, so the checkout
    gets no build/ or egg-info, and nothing untracked sneaks in."""
    src = tmp_path_factory.mktemp("src")
    for name in ["pyproject.toml", "README.md", *(p.name for p in ROOT.glob("LICEN[CS]E*"))]:
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "seeder", src / "seeder", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--outdir", out, src)
    return out


def _one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_the_wheel_and_sdist_are_model_seeder_and_pass_twine_check(dist: Path):
    wheel = _one(dist, "*.whl")
    sdist = _one(dist, "*.tar.gz")
    assert wheel.name == f"model_seeder-{seeder.__version__}-py3-none-any.whl"
    assert sdist.name == f"model_seeder-{seeder.__version__}.tar.gz"
    _run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(f"model_seeder-{seeder.__version__}.dist-info/METADATA").decode()
        entry_points = z.read(f"model_seeder-{seeder.__version__}.dist-info/entry_points.txt").decode()
    assert f"\nName: {DISTRIBUTION}\n" in metadata
    assert "seeder = seeder.cli:run" in entry_points  # the command keeps its name
    assert {"s3", "docker"} <= set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.M))


def test_the_schema_ships_in_the_wheel_and_the_sdist(dist: Path):
    shipped = (ROOT / SCHEMA).read_bytes()
    with zipfile.ZipFile(_one(dist, "*.whl")) as z:
        assert z.read(SCHEMA) == shipped
    with tarfile.open(_one(dist, "*.tar.gz")) as t:
        assert t.extractfile(f"model_seeder-{seeder.__version__}/{SCHEMA}").read() == shipped


def test_the_wheel_installs_into_a_clean_venv_and_runs(dist: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)  # no --system-site-packages: only what the wheel pulls in
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", _one(dist, "*.whl"))
    exe = venv / "bin" / "seeder"
    elsewhere = tmp_path  # not the checkout: `seeder` must come from the venv, not the working directory

    assert _run(exe, "--version", cwd=elsewhere).stdout == f"seeder {seeder.__version__} ({DISTRIBUTION})\n"
    helped = _run(exe, "--help", cwd=elsewhere).stdout
    assert "seeder add" in helped and "exit codes" in helped
    assert _run(exe, "schema", cwd=elsewhere).stdout == (ROOT / SCHEMA).read_text()
    where = _run(venv / "bin" / "python", "-c", "import seeder; print(seeder.__file__)", cwd=elsewhere).stdout
    assert Path(where.strip()).is_relative_to(venv)

    # --version reads the installed distribution's metadata, not a constant in the code.
    metadata = _one(next((venv / "lib").glob("python3*/site-packages")), "model_seeder-*.dist-info") / "METADATA"
    metadata.write_text(metadata.read_text().replace(f"\nVersion: {seeder.__version__}\n", "\nVersion: 9.8.7\n"))
    assert _run(exe, "--version", cwd=elsewhere).stdout == f"seeder 9.8.7 ({DISTRIBUTION})\n"


def test_the_images_install_extras_the_distribution_has():
    """Dockerfile and Dockerfile.seeder install the checkout by path, so the new name changes nothing
    there; the extras they ask for must still exist."""
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for dockerfile in ("Dockerfile", "Dockerfile.seeder"):
        asked = re.findall(r'pip install "\.\[([a-z0-9,]+)\]"', (ROOT / dockerfile).read_text())
        assert asked, dockerfile
        assert {e for group in asked for e in group.split(",")} <= extras, dockerfile
