"""The package builds as sdist and wheel, and the wheel alone gives a working `modelplane` command.

The fresh venv gets only the wheel (``--no-deps``); its dependencies come from this environment's
site-packages on ``PYTHONPATH``, which carries no ``modelplane`` of its own (the dev install is an
editable path entry, and ``PYTHONPATH`` does not read ``.pth`` files), so every import of
``modelplane`` below is the wheel's. Nothing is downloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelplane import __version__
from modelplane.testing.compiled import copy_sources

REPO = Path(__file__).resolve().parents[2]


def run(*cmd: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=300, check=False, env=env, cwd=cwd
    )
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@dataclass(frozen=True)
class Build:
    dist: Path  # the sdist and the wheel
    output: str  # what the build printed, stdout and stderr


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """sdist and wheel built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    base = tmp_path_factory.mktemp("packaging")
    tree = base / "src-tree"
    copy_sources(tree)
    out = base / "dist"
    cmd = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(tree)]
    result = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}"
    return Build(out, result.stdout)


@pytest.fixture(scope="module")
def dist(build: Build) -> Path:
    return build.dist


def test_the_build_warns_of_nothing_deprecated_and_the_license_is_an_spdx_expression(build: Build) -> None:
    """setuptools deprecates `project.license` as a table and License classifiers (builds fail from
    2027-02-18): the license is an SPDX expression, its file named in `license-files`."""
    deprecations = [
        line
        for line in build.output.splitlines()
        if any(
            text in line
            for text in ("DeprecationWarning", "is deprecated", "are deprecated", "remove deprecated calls")
        )
    ]
    assert deprecations == [], build.output
    wheel = build.dist / f"modelplane-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"modelplane-{__version__}.dist-info/METADATA").decode().splitlines()
        names = set(archive.namelist())
    assert "License-Expression: Apache-2.0" in metadata
    assert not [line for line in metadata if line.startswith(("License:", "Classifier: License ::"))]
    assert f"modelplane-{__version__}.dist-info/licenses/LICENSE" in names


def test_sdist_and_wheel_hold_the_whole_package(dist: Path) -> None:
    wheel = dist / f"modelplane-{__version__}-py3-none-any.whl"
    sdist = dist / f"modelplane-{__version__}.tar.gz"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(f"modelplane-{__version__}.dist-info/entry_points.txt").decode()
    for module in (
        "modelplane/cli/main.py",
        "modelplane/operator/handlers.py",
        "modelplane/serving/registry/server.py",
        "modelplane/serving/router/server.py",
        "modelplane/serving/runtime/__init__.py",
        "modelplane/devcluster/agent/main.py",
        "modelplane/py.typed",
    ):
        assert module in names, module
    assert not any(n.startswith("modelplane/operator/__init__") for n in names)  # never shadow `operator`
    entry_points = (
        zipfile.ZipFile(wheel).read(f"modelplane-{__version__}.dist-info/entry_points.txt").decode()
    )
    assert "modelplane = modelplane.cli.main:main" in entry_points
    with tarfile.open(sdist) as archive:
        members = set(archive.getnames())
    assert f"modelplane-{__version__}/pyproject.toml" in members
    assert f"modelplane-{__version__}/src/modelplane/operator/handlers.py" in members


def test_wheel_installs_into_a_fresh_venv_and_runs(dist: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(fresh)
    wheel = dist / f"modelplane-{__version__}-py3-none-any.whl"
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        fresh / "bin" / "python",
        "install",
        "--no-deps",
        "--no-index",
        wheel,
    )
    deps = sysconfig.get_paths()["purelib"]
    env = {**os.environ, "PYTHONPATH": deps, "COLUMNS": "200"}
    env.pop("VIRTUAL_ENV", None)
    command = fresh / "bin" / "modelplane"
    assert command.is_file()
    assert run(command, "--version", env=env, cwd=tmp_path).strip() == f"modelplane {__version__}"
    where = run(
        fresh / "bin" / "python", "-c", "import modelplane; print(modelplane.__file__)", env=env, cwd=tmp_path
    )
    assert where.strip().startswith(str(fresh))
    for sub in (("operator",), ("registry", "serve"), ("router",), ("runtime",)):
        assert "Usage" in run(command, *sub, "--help", env=env, cwd=tmp_path)
    # The registry's migrations ship in the wheel: migrate a new SQLite database to head.
    run(
        command,
        "registry",
        "migrate",
        "--database-url",
        f"sqlite:///{tmp_path / 'r.db'}",
        env=env,
        cwd=tmp_path,
    )
    assert (tmp_path / "r.db").stat().st_size > 0
