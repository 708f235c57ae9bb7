"""The ``modelplane registry`` commands find a running local stack: run in a folder whose
``.modelplane/stack.json`` names a live ``modelplane up``, they use its registry and admin token;
a stack that is gone leaves the old default; and a registry that cannot be reached, or a server
that is not a registry, gets one line naming the URL tried.

The stack here is its files (``stack.json`` with this test process's pid, the ``token`` file)
around a real registry process: what the commands read is exactly what ``modelplane up`` writes.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelplane.local.layout import DataDir, write_json
from modelplane.local.processes import free_port
from modelplane.testing.registry import ADMIN_TOKEN, RegistryProcess

DEFAULT_URL = "http://127.0.0.1:8080"
CHOICE_ENV = ("MODELPLANE_REGISTRY_URL", "MODELPLANE_REGISTRY_TOKEN", "MODELPLANE_DATA_DIR")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    base = tmp_path_factory.mktemp("registry")
    process = RegistryProcess(f"sqlite:///{base / 'r.db'}", base / "artifacts", base / "registry.log").start()
    try:
        with process.client() as client:
            client.create_model("from-the-stack", description="only in the local stack's registry")
        yield process
    finally:
        process.stop()


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with no registry chosen in the environment, unless ``env`` chooses one."""
    base = {k: v for k, v in os.environ.items() if k not in CHOICE_ENV}
    return subprocess.run(
        [sys.executable, "-m", "modelplane.serving.registry", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**base, "COLUMNS": "200", **(env or {})},
    )


def write_stack(folder: Path, pid: int, registry_url: str, token: str | None = ADMIN_TOKEN) -> DataDir:
    """What `modelplane up` leaves in ./.modelplane while it runs."""
    data = DataDir.at(folder / ".modelplane")
    data.create()
    write_json(data.stack_file, {"pid": pid, "httpPort": 8080, "grpcPort": 8081, "registryUrl": registry_url})
    if token is not None:
        data.token_file.write_text(token + "\n")
    return data


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_commands_use_the_running_stacks_registry_and_token(server: RegistryProcess, tmp_path: Path) -> None:
    write_stack(tmp_path, os.getpid(), server.url)
    listed = cli("models", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "from-the-stack" in listed.stdout
    assert listed.stderr == ""  # stdout for scripts, and nothing else said on success
    got = cli("models", "get", "from-the-stack", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["description"] == "only in the local stack's registry"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_flag = cli(
        "models", "get", "from-the-stack", "--data-dir", str(tmp_path / ".modelplane"), cwd=elsewhere
    )
    assert by_flag.returncode == 0, by_flag.stderr


def test_a_token_or_url_given_wins_over_the_stack(server: RegistryProcess, tmp_path: Path) -> None:
    write_stack(tmp_path, os.getpid(), server.url)
    wrong_token = cli("models", "list", "--token", "not-the-admin-token", cwd=tmp_path)
    assert wrong_token.returncode == 1
    assert "401" in wrong_token.stderr
    port = free_port()
    by_env = cli("models", "list", cwd=tmp_path, env={"MODELPLANE_REGISTRY_URL": f"http://127.0.0.1:{port}"})
    assert by_env.returncode == 1
    assert f"http://127.0.0.1:{port}" in by_env.stderr


def test_a_stack_that_is_gone_leaves_the_default(server: RegistryProcess, tmp_path: Path) -> None:
    write_stack(tmp_path, dead_pid(), server.url)
    listed = cli("models", "list", cwd=tmp_path)
    assert "from-the-stack" not in listed.stdout
    if listed.returncode != 0:  # nothing (or something else) answers on the default address
        message = one_line(listed.stderr)
        assert DEFAULT_URL in message
        assert "no `modelplane up` runs in this folder" in message
        assert "Traceback" not in listed.stderr
    named = cli("models", "list", "--data-dir", str(tmp_path / ".modelplane"), cwd=tmp_path)
    assert named.returncode == 1
    assert "no local stack runs on" in one_line(named.stderr)


def test_an_unreachable_registry_is_named(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    given = cli("models", "list", "--url", url, cwd=tmp_path)
    assert given.returncode == 1
    message = one_line(given.stderr)
    assert f"cannot reach the registry at {url}" in message
    assert "Traceback" not in given.stderr
    write_stack(tmp_path, os.getpid(), url)
    from_stack = cli("models", "list", cwd=tmp_path)
    assert from_stack.returncode == 1
    message = one_line(from_stack.stderr)
    assert f"cannot reach the registry at {url} (the local stack's" in message
    assert "stack.json" in message


class _RouterLike(http.server.BaseHTTPRequestHandler):
    """Answers every request as the router answers a path it has no route for."""

    def do_GET(self) -> None:
        body = json.dumps({"error": f"no V2 model route for {self.path!r}"}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_server_that_is_not_a_registry_is_named(tmp_path: Path) -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RouterLike)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        answered = cli("models", "list", "--url", url, cwd=tmp_path)
        assert answered.returncode == 1
        message = one_line(answered.stderr)
        assert f"{url} answered HTTP 404, which is not a Modelplane registry's answer" in message
        assert "Traceback" not in answered.stderr
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_url_past_the_registrys_base_is_named(server: RegistryProcess, tmp_path: Path) -> None:
    answered = cli("models", "list", "--url", f"{server.url}/api/v1", cwd=tmp_path)
    assert answered.returncode == 1
    message = one_line(answered.stderr)
    assert f"the registry at {server.url}/api/v1 has no API at /api/v1/api/v1/models" in message
