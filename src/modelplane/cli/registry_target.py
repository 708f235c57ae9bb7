"""Which registry the ``modelplane registry`` commands talk to, with which token, and what to say
when what answers there is not a registry.

In order: ``--url`` (or ``MODELPLANE_REGISTRY_URL``); else the registry of the ``modelplane up``
running on the data directory (``--data-dir``, ``MODELPLANE_DATA_DIR``, or ``./.modelplane`` when
a stack runs there), with the admin token in its ``token`` file unless ``--token`` gives one; else
``http://127.0.0.1:8080``. While ``modelplane up`` runs, that address is its router, not its
registry (which takes a free port), which is why the running stack comes first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_DATA_DIR = Path(".modelplane")
#: Every error the registry answers is a problem document whose ``type`` starts with this.
PROBLEM_TYPE_PREFIX = "https://modelplane.io/problems/"


class TargetError(RuntimeError):
    """No registry to talk to; the message says what to do."""


@dataclass(frozen=True)
class LocalStack:
    """A running ``modelplane up``: its data directory, registry URL and admin token."""

    data_dir: Path
    registry_url: str
    token: str | None


@dataclass(frozen=True)
class Target:
    """The registry a command talks to and how it was chosen (for messages)."""

    url: str
    token: str | None
    origin: str  # "url", "stack" or "default"
    data_dir: Path | None = None  # the stack's, when origin is "stack"


def read_local_stack(data_dir: Path) -> LocalStack | None:
    """The stack running on ``data_dir`` (its ``stack.json`` names a live pid), or None."""
    from modelplane.local.layout import DataDir, StackNotRunningError

    data = DataDir.at(data_dir)
    try:
        info = data.running_stack()
    except StackNotRunningError:
        return None
    url = info.get("registryUrl")
    if not isinstance(url, str) or not url:
        return None
    try:
        token = data.token_file.read_text().strip() or None
    except OSError:
        token = None
    return LocalStack(data.root, url, token)


def choose(
    url: str | None,
    token: str | None,
    data_dir: Path | None,
    read_stack: Callable[[Path], LocalStack | None] = read_local_stack,
) -> Target:
    """The registry to use: ``url``; else the stack on ``data_dir`` (or on ./.modelplane); else the default.

    ``data_dir`` given means "that stack": if none runs there, TargetError says so. A ``token``
    given wins over the stack's own.
    """
    if url:
        return Target(url, token, "url")
    stack = read_stack(data_dir if data_dir is not None else DEFAULT_DATA_DIR)
    if stack is None and data_dir is not None:
        raise TargetError(
            f"no local stack runs on {data_dir}: start it with `modelplane up --data-dir {data_dir}`, "
            "or pass --url (or set MODELPLANE_REGISTRY_URL)"
        )
    if stack is not None:
        return Target(
            stack.registry_url, token if token is not None else stack.token, "stack", stack.data_dir
        )
    return Target(DEFAULT_URL, token, "default")


def _where(target: Target) -> str:
    if target.origin == "stack":
        return f"the registry at {target.url} (the local stack's, from {target.data_dir}/stack.json)"
    return f"the registry at {target.url}"


def _advice(target: Target) -> str:
    if target.origin == "stack":
        return "is its `modelplane up` still starting, or stopping? Pass --url to use another registry"
    if target.origin == "default":
        return (
            f"no `modelplane up` runs in this folder ({DEFAULT_DATA_DIR}/stack.json) and no --url was "
            "given: run the command in the folder where `modelplane up` runs (or pass its --data-dir), "
            "or pass --url (or set MODELPLANE_REGISTRY_URL) to name the registry"
        )
    return (
        "check the URL (--url or MODELPLANE_REGISTRY_URL) and that the registry runs "
        "(`modelplane registry serve`, or `modelplane up`, which prints its registry's URL)"
    )


def unreachable_message(target: Target, exc: BaseException) -> str:
    """For a connection that failed (refused, unknown host, timed out)."""
    reason = str(exc) or type(exc).__name__
    return f"cannot reach {_where(target)} ({reason}): {_advice(target)}"


def not_a_registry_message(target: Target, answer: str) -> str:
    """For an answer that is not a Modelplane registry's."""
    return (
        f"{target.url} answered {answer}, which is not a Modelplane registry's answer "
        f"(is it another server, such as the router of `modelplane up`?): {_advice(target)}"
    )


def looks_like_problem(problem: dict[str, Any]) -> bool:
    """Whether an error body is one of the registry's problem documents."""
    return str(problem.get("type", "")).startswith(PROBLEM_TYPE_PREFIX)


def is_unknown_route(status: int, problem: dict[str, Any]) -> bool:
    """A 404 for a path the registry has no route for (not a model or version it lacks)."""
    return status == 404 and looks_like_problem(problem) and problem.get("detail") == "Not Found"


def unknown_route_message(target: Target, problem: dict[str, Any]) -> str:
    path = problem.get("instance") or "the path asked for"
    return (
        f"the registry at {target.url} has no API at {path}: give its base URL, such as "
        "http://HOST:PORT, without /api/v1"
    )


def answers_like_registry(url: str, timeout_s: float = 5.0) -> bool:
    """Whether ``url`` answers the API root as the registry does: a problem document (or JSON)."""
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + "/api/v1/", timeout=timeout_s, trust_env=False)
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(body, dict) and looks_like_problem(body)
