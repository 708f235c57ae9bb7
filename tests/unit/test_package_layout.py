"""The package layout promises: one import root, the standard library never shadowed, one version."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version as dist_version
from pathlib import Path

import modelplane

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_operator_is_the_standard_library_even_from_the_repository_root() -> None:
    # `python -I`/`-S` skip site, which would otherwise import the stdlib module before the
    # script's own path is searched: the strictest case a user can hit.
    for flags in ([], ["-S"]):
        out = subprocess.run(
            [sys.executable, *flags, "-c", "import operator, collections; print(operator.__file__)"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert Path(out).name == "operator.py", f"`import operator` resolved to {out} with flags {flags}"
        assert REPO not in Path(out).parents


def test_component_folders_import_under_the_one_package() -> None:
    out = _python(
        "import operator, modelplane.operator, modelplane.serving;"
        "print(list(modelplane.operator.__path__)[0]); print(list(modelplane.serving.__path__)[0]);"
        "print(operator.itemgetter(1)([0, 7]))",
        cwd=REPO,
    )
    operator_path, serving_path, probe = out.splitlines()
    assert Path(operator_path).resolve() == REPO / "operator"
    assert Path(serving_path).resolve() == REPO / "serving"
    assert probe == "7"


def test_version_has_one_source() -> None:
    assert dist_version("modelplane") == modelplane.__version__
