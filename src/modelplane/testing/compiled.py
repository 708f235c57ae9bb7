"""The package as the control image ships it: a wheel whose router request path is mypyc-compiled.

``compiled_package()`` builds that wheel from a copy of the sources (``MODELPLANE_COMPILE=1``, see
``setup.py``) and unpacks it into a folder under the cache; put the folder first on ``PYTHONPATH``
and every ``modelplane`` import comes from the wheel. The folder is keyed by a hash of the sources,
Python and mypy, so a second call with nothing changed returns at once and an edited module is
never run stale.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from modelplane.devcluster.build import cache_root

REPO = Path(__file__).resolve().parents[3]
# What a build of the package reads (the same set the packaging test builds from).
SOURCES = (
    "pyproject.toml",
    "setup.py",
    "README.md",
    "LICENSE",
    "src",
    "operator",
    "serving",
    "deploy/devcluster",
)


# Build outputs and install metadata that sit among the sources: neither copied nor hashed.
NOT_SOURCES = ("__pycache__", "*.pyc", "*.so", "*.egg-info", "build")
KEEP_BUILDS = 4  # a few source states (an A/B benchmark needs two) without the cache growing for ever


class CompileError(RuntimeError):
    """The compiled build failed; the message carries the build's output."""


def copy_sources(tree: Path, repo: Path = REPO) -> None:
    """Copy what a build of ``repo`` reads into ``tree`` (symlinks kept, no bytecode)."""
    for name in SOURCES:
        source, target = repo / name, tree / name
        if source.is_dir():
            shutil.copytree(
                source,
                target,
                symlinks=True,
                ignore=shutil.ignore_patterns(*NOT_SOURCES),
            )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def sources_digest(repo: Path = REPO) -> str:
    """A hash of every source file of the package and of the tools that compile it."""
    import mypy.version

    digest = hashlib.sha256(f"{sys.version}|{mypy.version.__version__}".encode())
    for name in SOURCES:
        root = repo / name
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            relative = path.relative_to(repo)
            if any(fnmatch.fnmatch(part, pattern) for part in relative.parts for pattern in NOT_SOURCES):
                continue
            digest.update(str(relative).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def compiled_package(repo: Path = REPO, cache: Path | None = None) -> Path:
    """The folder holding the unpacked compiled wheel of ``repo``'s sources (a git worktree of another
    revision, say), built now unless the cache has it."""
    base = (cache or cache_root()) / "compiled"
    target = base / sources_digest(repo)
    if (target / "modelplane").is_dir():
        target.touch()  # recently used: kept by the pruning below
        return target
    base.mkdir(parents=True, exist_ok=True)
    _prune(base, keep=KEEP_BUILDS - 1)
    with tempfile.TemporaryDirectory(dir=base) as scratch:
        tree, dist = Path(scratch) / "tree", Path(scratch) / "dist"
        copy_sources(tree, repo)
        result = subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(tree)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MODELPLANE_COMPILE": "1"},
        )
        if result.returncode != 0:
            output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            raise CompileError(f"the compiled build failed:\n{output}")
        (wheel,) = dist.glob("*.whl")
        if wheel.name.endswith("-none-any.whl"):  # e.g. a revision from before setup.py
            raise CompileError(f"{repo} built a pure-Python wheel ({wheel.name}): nothing to compile")
        unpacked = Path(scratch) / "unpacked"
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(unpacked)
        try:
            unpacked.rename(target)
        except OSError:  # another process finished the same build first
            if not (target / "modelplane").is_dir():
                raise
    return target


def _prune(base: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently used builds (and any half-made scratch folder)."""
    builds = sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def compiled_env(repo: Path = REPO) -> dict[str, str]:
    """Environment additions that make a Python subprocess import ``repo``'s compiled package."""
    path = str(compiled_package(repo))
    existing = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": path + (os.pathsep + existing if existing else "")}
