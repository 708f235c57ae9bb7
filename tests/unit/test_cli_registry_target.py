"""Which registry ``modelplane registry ...`` talks to: --url, else a running local stack, else the
default; and the messages that name the URL tried."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelplane.cli.registry_target import (
    DEFAULT_DATA_DIR,
    DEFAULT_URL,
    LocalStack,
    Target,
    TargetError,
    choose,
    is_unknown_route,
    looks_like_problem,
    not_a_registry_message,
    read_local_stack,
    unknown_route_message,
    unreachable_message,
)
from modelplane.local.layout import DataDir, write_json

STACK = LocalStack(Path("/work/.modelplane"), "http://127.0.0.1:41234", "stack-token")


def no_stack(data_dir: Path) -> LocalStack | None:
    return None


def test_a_url_given_wins_and_no_stack_is_looked_for() -> None:
    def fail(data_dir: Path) -> LocalStack | None:
        raise AssertionError("looked for a stack")

    assert choose("http://reg:8090", "t", None, fail) == Target("http://reg:8090", "t", "url")
    assert choose("http://reg:8090", None, Path("x"), fail) == Target("http://reg:8090", None, "url")


def test_a_running_stack_gives_its_registry_and_token_unless_a_token_is_given() -> None:
    looked: list[Path] = []

    def found(data_dir: Path) -> LocalStack | None:
        looked.append(data_dir)
        return STACK

    assert choose(None, None, None, found) == Target(
        STACK.registry_url, "stack-token", "stack", STACK.data_dir
    )
    assert choose(None, "mine", None, found).token == "mine"
    assert looked == [DEFAULT_DATA_DIR, DEFAULT_DATA_DIR]
    assert choose(None, None, Path("/elsewhere"), found).url == STACK.registry_url
    assert looked[-1] == Path("/elsewhere")


def test_no_stack_leaves_the_default_unless_a_data_dir_was_named() -> None:
    assert choose(None, "t", None, no_stack) == Target(DEFAULT_URL, "t", "default")
    with pytest.raises(TargetError, match=r"no local stack runs on /elsewhere: start it with `modelplane up"):
        choose(None, None, Path("/elsewhere"), no_stack)


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_read_local_stack_needs_a_live_pid_and_a_registry_url(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path / ".modelplane")
    data.create()
    assert read_local_stack(data.root) is None  # no stack.json
    write_json(data.stack_file, {"pid": os.getpid(), "registryUrl": "http://127.0.0.1:41234"})
    assert read_local_stack(data.root) == LocalStack(data.root, "http://127.0.0.1:41234", None)
    data.token_file.write_text("secret\n")
    assert read_local_stack(data.root) == LocalStack(data.root, "http://127.0.0.1:41234", "secret")
    write_json(data.stack_file, {"pid": _dead_pid(), "registryUrl": "http://127.0.0.1:41234"})
    assert read_local_stack(data.root) is None
    write_json(data.stack_file, {"pid": os.getpid()})
    assert read_local_stack(data.root) is None


def test_messages_name_the_url_and_where_it_came_from() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    default = unreachable_message(Target(DEFAULT_URL, None, "default"), refused)
    assert f"cannot reach the registry at {DEFAULT_URL}" in default
    assert "no `modelplane up` runs in this folder" in default
    assert "--url" in default
    stack = unreachable_message(Target(STACK.registry_url, None, "stack", STACK.data_dir), refused)
    assert f"{STACK.registry_url} (the local stack's, from /work/.modelplane/stack.json)" in stack
    given = not_a_registry_message(Target("http://127.0.0.1:8080", None, "url"), "HTTP 404")
    assert given.startswith("http://127.0.0.1:8080 answered HTTP 404, which is not a Modelplane registry's")
    assert "router" in given


def test_registry_errors_are_problem_documents() -> None:
    assert looks_like_problem({"type": "https://modelplane.io/problems/not-found", "status": 404})
    assert not looks_like_problem({"error": "no V2 model route for '/api/v1/models'"})
    assert not looks_like_problem({"title": "Not Found", "detail": "<html>"})


def test_a_route_the_registry_lacks_is_told_from_a_model_it_lacks() -> None:
    route = {
        "type": "https://modelplane.io/problems/not-found",
        "status": 404,
        "detail": "Not Found",
        "instance": "/api/v1/api/v1/models",
    }
    model = {**route, "detail": "model 'nope' does not exist", "instance": "/api/v1/models/nope"}
    assert is_unknown_route(404, route)
    assert not is_unknown_route(404, model)
    assert not is_unknown_route(404, {"detail": "Not Found"})  # not the registry's problem document
    message = unknown_route_message(Target("http://reg:8090/api/v1", None, "url"), route)
    assert message.startswith("the registry at http://reg:8090/api/v1 has no API at /api/v1/api/v1/models")
