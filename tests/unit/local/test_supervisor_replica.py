"""A replica of a language model runs two processes, as its pod does: the download, then the runtime.

It counts as starting until its last process is ready; a download that fails is an exit (the
supervisor's back-off restarts it); one that succeeds is no exit at all.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from modelplane.api.metrics import LoadReport
from modelplane.api.v1alpha1 import ModelDeploymentSpec
from modelplane.local.layout import DataDir
from modelplane.local.specs import LocalDeployment
from modelplane.local.supervisor import Replica, Supervisor, Tracked
from modelplane.resolution.resolver import Resolved, ServedVersion


def _replica(code: str, pending: list[list[str]], tmp_path: Path) -> Replica:
    process = subprocess.Popen([sys.executable, "-c", code])
    process.wait()
    return Replica("chat", 0, "r1", 1, process, 1234, None, tmp_path / "log", 0.0, pending=pending)


def test_a_finished_download_with_a_runtime_to_come_is_starting(tmp_path: Path) -> None:
    replica = _replica("pass", [["llm-runtime", "DIR"]], tmp_path)
    assert replica.step_done()
    assert replica.view().state == "starting"


def test_a_failed_download_is_an_exit(tmp_path: Path) -> None:
    replica = _replica("raise SystemExit(1)", [["llm-runtime", "DIR"]], tmp_path)
    assert not replica.step_done()
    assert replica.view().state == "exited"


def test_the_last_process_exiting_is_an_exit_and_ready_needs_no_pending_step(tmp_path: Path) -> None:
    replica = _replica("pass", [], tmp_path)
    assert replica.view().state == "exited"
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        replica.process, replica.ready = running, True
        assert replica.view().state == "ready"
        replica.pending = [["llm-runtime", "DIR"]]
        assert replica.view().state == "starting"
    finally:
        running.kill()
        running.wait()


def test_an_http_only_runtime_has_no_grpc_endpoint(tmp_path: Path) -> None:
    replica = _replica("pass", [], tmp_path)
    endpoint = replica.endpoint()
    assert endpoint.grpc is None
    assert endpoint.http == "http://127.0.0.1:1234"


def test_a_language_model_is_routed_as_generative_and_shown_at_v1(tmp_path: Path) -> None:
    class NoResolver:
        async def resolve(self, *args: object) -> Resolved:
            raise AssertionError("not called")

    class Sink:
        def set_routes(self, routes: object) -> None:
            pass

    spec = ModelDeploymentSpec.model_validate({"model": {"name": "chat", "alias": "production"}})
    supervisor = Supervisor(
        DataDir.at(tmp_path),
        tmp_path,
        NoResolver(),
        Sink(),
        lambda: LoadReport({}, {}),
        artifact_token="t",
        router_http_port=8080,
    )
    served = ServedVersion("stable", "chat", 2, "http://registry/files", "ab" * 32, "", "generative")
    supervisor.tracked["chat"] = Tracked(
        LocalDeployment("chat", tmp_path / "chat.yaml", spec),
        "2026-01-01T00:00:00Z",
        1,
        Resolved(served, "chat v2"),
    )
    route = supervisor.routes()["chat"]
    assert route.generative
    assert route.backend_model == "chat"
    [row] = supervisor.status()
    assert row["url"] == "http://127.0.0.1:8080/v1"
