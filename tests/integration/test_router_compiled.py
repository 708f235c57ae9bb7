"""The router as the control image ships it, with its request path compiled by mypyc, behaves as
its source does: the router's unit tests run against the compiled wheel and pass.

The wheel is built from a copy of the sources with ``MODELPLANE_COMPILE=1`` (``setup.py``) and
cached by a hash of the sources, so only the first run after a change compiles (about a minute).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modelplane.testing.compiled import compiled_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return {**os.environ, **compiled_env()}


def python(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(600)
def test_the_request_path_is_compiled(env: dict[str, str]) -> None:
    probe = (
        "import importlib\n"
        "for name in ('http_server', 'upstream', 'proxy', 'dispatch', 'balancing'):\n"
        "    print(importlib.import_module('modelplane.serving.router.' + name).__file__)\n"
    )
    result = python(env, "-c", probe)
    assert result.returncode == 0, result.stderr
    files = result.stdout.split()
    assert len(files) == 5
    assert all(f.endswith(".so") and not f.startswith(str(REPO)) for f in files), files


@pytest.mark.timeout(600)
def test_the_compiled_router_passes_the_router_unit_tests(env: dict[str, str]) -> None:
    result = python(env, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/router")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed(, \d+ warnings?)? in .*", summary), summary  # none failed or skipped
