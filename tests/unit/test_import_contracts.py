"""The import contracts in .importlinter hold, see all the code, and catch a planted violation.

Each violation is planted in a copy of the source tree (the working tree is never touched) and
``lint-imports`` runs on the copy with the repository's own contracts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".importlinter"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
ROOTS = ("modelplane", "modelplane.operator")  # as in .importlinter: operator/ is a namespace portion
COPIED = ("src", "operator", "serving", "deploy/devcluster")


def _lint(src: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(CONFIG), "--no-cache"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the source tree, symlinks kept, so ``modelplane`` imports from it."""
    for folder in COPIED:
        shutil.copytree(
            REPO / folder,
            tmp_path / folder,
            symlinks=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
        )
    return tmp_path


def _module_files() -> dict[str, Path]:
    """Every Python module of the product, by import name, from the folders themselves."""
    found: dict[str, Path] = {}
    bases = {
        "modelplane": REPO / "src" / "modelplane",
        "modelplane.operator": REPO / "operator",
        "modelplane.serving": REPO / "serving",
        "modelplane.devcluster": REPO / "deploy" / "devcluster",
    }
    for prefix, base in bases.items():
        for path in base.rglob("*.py"):
            relative = path.relative_to(base)
            if relative.parts[0] in ("operator", "serving", "devcluster") and prefix == "modelplane":
                continue  # the symlinks: listed under their own prefix
            parts = [*relative.parent.parts] + ([] if path.stem == "__init__" else [path.stem])
            found[".".join([prefix, *parts])] = path
    return found


def test_the_contracts_hold_on_the_tree() -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(CONFIG), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_contracts_see_every_module() -> None:
    # A folder without __init__.py inside a package is invisible to the import graph, and so to
    # every contract: each module of the product must be in the graph the contracts check.
    graph = grimp.build_graph(*ROOTS, cache_dir=None)
    missing = sorted(set(_module_files()) - set(graph.modules))
    assert not missing, f"modules the import contracts cannot see (add an __init__.py?): {missing}"


PLANTED = [
    pytest.param(
        "serving/router/routes.py",
        "import modelplane.operator.children",
        "The parts never import each other",
        id="router-imports-operator",
    ),
    pytest.param(
        "src/modelplane/api/labels.py",
        "import modelplane.autoscaling.decide",
        "Layers: entry points",
        id="api-imports-a-layer-above",
    ),
    pytest.param(
        "src/modelplane/local/supervisor.py",
        "import modelplane.cli.main",
        "Layers: entry points",
        id="local-stack-imports-the-cli",
    ),
    pytest.param(
        "operator/children.py",
        "import modelplane.operator.reconcile",
        "Operator: kopf wiring",
        id="pure-children-import-reconcile",
    ),
    pytest.param(
        "serving/router/balancing.py",
        "import modelplane.serving.router.dispatch",
        "Router: the server",
        id="balancing-imports-the-data-path",
    ),
    pytest.param(
        "src/modelplane/autoscaling/decide.py",
        "import httpx",
        "Decisions are pure",
        id="decision-does-io",
    ),
    pytest.param(
        "serving/runtime/generative/scheduler.py",
        "import torch",
        "Generative engine: batching, cache and stop decisions",
        id="scheduler-imports-torch",
    ),
    pytest.param(
        "serving/runtime/errors.py",
        "import modelplane.testing.fixtures",
        "The product never imports the dev cluster or test support",
        id="runtime-imports-test-support",
    ),
]


@pytest.mark.parametrize(("module", "line", "contract"), PLANTED)
def test_a_planted_violation_breaks_its_contract(tree: Path, module: str, line: str, contract: str) -> None:
    target = tree / module
    target.write_text(target.read_text() + f"\n{line}  # planted\n")
    result = _lint(tree / "src", tree)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
