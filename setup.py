"""Build hook: ``MODELPLANE_COMPILE=1`` compiles the router's request path with mypyc.

Everything else about the package is declared in ``pyproject.toml``. By default the build is pure
Python (editable installs, development, the test suite). The control image builds the compiled
wheel, which forwards a request with about a fifth less CPU than the same code interpreted
(``benchmarks/router_ab.py``); the modules are strictly typed, which is what mypyc needs. The
objects made per request on that path are plain classes with their own ``__init__``, not
dataclasses: a dataclass's generated ``__init__`` stays interpreted in a compiled module.

    pip install . mypy setuptools wheel      # the dependencies mypyc type-checks against, and mypy
    MODELPLANE_COMPILE=1 pip wheel --no-deps --no-build-isolation .

The compiled build needs mypy and a C compiler in the build environment (hence
``--no-build-isolation``; ``deploy/docker/control.Dockerfile`` pins the mypy it uses). Its modules
behave as the source does, which ``tests/integration/test_router_compiled.py`` checks by running
the router's unit tests against it.
"""

from __future__ import annotations

import os

from setuptools import setup

# The modules a proxied request runs through, relative to the repository root (the package's
# `serving` folder is reached through its symlink, so mypyc names them `modelplane.serving...`).
COMPILED_MODULES = [
    f"src/modelplane/serving/router/{name}.py"
    for name in (
        "http_server",
        "upstream",
        "proxy",
        "dispatch",
        "balancing",
        "metrics",
        "paths",
        "routes",
        "affinity",
        "openai_api",
    )
]


def ext_modules() -> list[object]:
    if os.environ.get("MODELPLANE_COMPILE", "0") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        raise SystemExit(
            "MODELPLANE_COMPILE=1 needs mypy (which provides mypyc) in the build environment: "
            "`pip install mypy`, then build with `--no-build-isolation`"
        ) from exc
    return list(mypycify(COMPILED_MODULES, opt_level="3"))


setup(ext_modules=ext_modules())
