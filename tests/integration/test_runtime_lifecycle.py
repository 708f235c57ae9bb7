"""Process lifetime: drain on SIGTERM, 503 while a model loads, artifacts fetched over HTTP with sha256."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import pytest
import torch

from modelplane.testing.runtime import (
    GATE_ENV,
    RuntimeProcess,
    make_mlp,
    mlp_config,
    save_torchscript,
    write_gated_mlp,
    write_model,
)

ROW = {"name": "INPUT__0", "shape": [1, 64], "datatype": "FP32", "data": [0.25] * 64}


def infer(url: str, model: str = "mlp", timeout: float = 60.0) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{model}/infer", json={"inputs": [ROW]}, timeout=timeout)


def inflight(server: RuntimeProcess) -> float:
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('modelplane_runtime_inflight_requests{model="slow"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sigterm_lets_inflight_requests_finish_and_refuses_new_ones(tmp_path: Path) -> None:
    """Requests in flight when SIGTERM arrives (one in the model, seven queued behind it) all complete."""
    model = make_mlp(seed=3)
    repo = tmp_path / "models"
    write_gated_mlp(repo, "slow", model)
    gate = tmp_path / "gate"
    server = RuntimeProcess(repo, env={GATE_ENV: str(gate)}).start()
    try:
        gate.touch()  # from now on the model holds every forward until the gate is removed
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(infer, server.http_url, "slow") for _ in range(8)]
            deadline = time.monotonic() + 30
            while inflight(server) < 8 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert inflight(server) == 8
            server.terminate()
            # Draining: not ready, and a new request is refused with 503 while the old ones finish.
            deadline = time.monotonic() + 10
            while httpx.get(server.http_url + "/v2/health/ready", timeout=5).status_code == 200:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            refused = infer(server.http_url, "slow")
            assert refused.status_code == 503
            assert "shutting down" in refused.json()["error"]
            assert refused.headers["retry-after"] == "1"
            assert not any(f.done() for f in futures)  # still held: the drain waits for them
            gate.unlink()
            responses = [f.result(timeout=60) for f in futures]
        with torch.no_grad():
            want = model(torch.full((1, 64), 0.25)).numpy()
        for response in responses:
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(response.json()["outputs"][0]["data"], want[0], rtol=1e-5, atol=1e-5)
            # Answered while draining: the connection closes with it, so no client sends its next
            # request on a connection the server is about to close.
            assert response.headers.get("connection") == "close"
        assert server.process is not None
        assert server.process.wait(30) == 0
    finally:
        server.stop()


def test_a_clean_start_and_stop_log_at_info_and_warn_of_nothing(tmp_path: Path) -> None:
    """The start-up line, a model's readiness, the drain and the stop are news, not warnings; and the
    runtime shows its INFO lines."""
    repo = tmp_path / "models"
    write_model(repo, "mlp", make_mlp(), mlp_config("mlp"))
    server = RuntimeProcess(repo, ("--drain-delay", "0.1")).start()
    assert server.stop() == 0
    lines = server.log().splitlines()
    levels = {
        text: [line.split()[2] for line in lines if f"modelplane.runtime: {text}" in line]
        for text in ("modelplane runtime: HTTP on", "model mlp ready", "leaving:", "draining:", "stopped")
    }
    assert levels == {text: ["INFO"] for text in levels}, server.log()
    assert not [line for line in lines if " WARNING " in line or " ERROR " in line], server.log()


def test_during_the_drain_delay_the_server_is_not_ready_but_still_answers(tmp_path: Path) -> None:
    """Kubernetes removes a terminating pod from its EndpointSlices only after a while; requests
    sent on the stale endpoints meanwhile must still be answered (the "lame duck" period)."""
    model = make_mlp(seed=5)
    repo = tmp_path / "models"
    write_model(repo, "mlp", model, mlp_config("mlp"))
    server = RuntimeProcess(repo, ("--drain-delay", "5.0")).start()
    try:
        assert infer(server.http_url).status_code == 200
        server.terminate()
        deadline = time.monotonic() + 10
        while httpx.get(server.http_url + "/v2/health/ready", timeout=5).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert httpx.get(server.http_url + "/v2/models/mlp/ready", timeout=5).status_code == 503
        assert httpx.get(server.http_url + "/v2/health/live", timeout=5).status_code == 200
        answered = infer(server.http_url)
        assert answered.status_code == 200, answered.text
        with torch.no_grad():
            want = model(torch.full((1, 64), 0.25)).numpy()
        np.testing.assert_allclose(answered.json()["outputs"][0]["data"], want[0], rtol=1e-5, atol=1e-5)
        assert server.process is not None
        assert server.process.wait(60) == 0
    finally:
        server.stop()


def test_sigterm_under_continuous_load_answers_every_accepted_request(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_model(repo, "mlp", make_mlp(), mlp_config("mlp", delay_us=1000))
    # The drain delay keeps the port open while clients learn (from 503s) that the pod is leaving,
    # as a load balancer does; a client stops sending at its first 503.
    server = RuntimeProcess(repo, ("--drain-delay", "1.0")).start()
    statuses: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=30) as c:
            for _ in range(2000):  # bounded; the server exits long before
                if stop.is_set():
                    return
                try:
                    response = c.post(f"{server.http_url}/v2/models/mlp/infer", json={"inputs": [ROW]})
                except httpx.ConnectError:
                    return  # the listener is closed: the server has finished draining
                except httpx.HTTPError as exc:  # a dropped in-flight request would land here
                    errors.append(repr(exc))
                    return
                statuses.append(response.status_code)
                if response.status_code == 503:
                    return

    threads = [threading.Thread(target=client) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(statuses) < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.terminate()
        assert server.process is not None
        assert server.process.wait(60) == 0
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        server.stop()
    assert not errors
    assert statuses.count(200) >= 200
    assert set(statuses) <= {200, 503}


class _ArtifactHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    token = ""
    release = threading.Event()
    seen_auth: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen_auth.append(self.headers.get("Authorization", ""))
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_response(401)
            self.end_headers()
            return
        self.release.wait(60)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def artifact_server(tmp_path: Path) -> Iterator[tuple[str, type[_ArtifactHandler]]]:
    class Handler(_ArtifactHandler):  # state of this test's server only
        release = threading.Event()
        seen_auth: ClassVar[list[str]] = []

    handler = Handler
    handler.payload = save_torchscript(make_mlp(seed=5), tmp_path / "artifact" / "model.pt").read_bytes()
    handler.token = "s3cret-token"
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/artifacts/model.pt", handler
    finally:
        handler.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def artifact_config(name: str, uri: str, sha256: str) -> str:
    extra = (
        f'parameters {{ key: "artifact_uri" value {{ string_value: "{uri}" }} }}\n'
        f'parameters {{ key: "artifact_sha256" value {{ string_value: "{sha256}" }} }}\n'
    )
    return mlp_config(name, extra=extra)


def test_model_fetched_over_http_is_503_while_loading_then_serves(
    tmp_path: Path, artifact_server: tuple[str, type[_ArtifactHandler]]
) -> None:
    uri, handler = artifact_server
    digest = hashlib.sha256(handler.payload).hexdigest()
    repo = tmp_path / "models"
    (repo / "remote").mkdir(parents=True)
    (repo / "remote" / "config.pbtxt").write_text(artifact_config("remote", uri, digest))
    token_file = tmp_path / "token"
    token_file.write_text(handler.token + "\n")
    server = RuntimeProcess(repo, env={"MODELPLANE_ARTIFACT_TOKEN_FILE": str(token_file)})
    server.start(wait_ready=False)
    try:
        # The download is held back by the artifact server: the model is loading.
        assert httpx.get(server.http_url + "/v2/health/live").status_code == 200
        assert httpx.get(server.http_url + "/v2/health/ready").status_code == 503
        assert httpx.get(server.http_url + "/v2/models/remote/ready").status_code == 503
        loading = infer(server.http_url, "remote")
        assert loading.status_code == 503
        assert loading.headers["retry-after"] == "1"
        assert "not ready" in loading.json()["error"] or "loading" in loading.json()["error"]
        handler.release.set()
        server.wait("/v2/health/ready", 60)
        response = infer(server.http_url, "remote")
        assert response.status_code == 200, response.text
        with torch.no_grad():
            want = make_mlp(seed=5)(torch.full((1, 64), 0.25)).numpy()
        np.testing.assert_allclose(response.json()["outputs"][0]["data"], want[0], rtol=1e-5, atol=1e-5)
        assert handler.seen_auth == [f"Bearer {handler.token}"]
        cached = list((repo / ".cache" / digest).iterdir())
        assert [p.name for p in cached] == ["model.pt"]
    finally:
        server.stop()


def test_artifact_with_wrong_sha256_is_never_loaded(
    tmp_path: Path, artifact_server: tuple[str, type[_ArtifactHandler]]
) -> None:
    uri, handler = artifact_server
    handler.release.set()
    wrong = "0" * 64
    repo = tmp_path / "models"
    (repo / "tampered").mkdir(parents=True)
    (repo / "tampered" / "config.pbtxt").write_text(artifact_config("tampered", uri, wrong))
    write_model(repo, "mlp", make_mlp(), mlp_config("mlp"))
    server = RuntimeProcess(repo, env={"MODELPLANE_ARTIFACT_TOKEN": handler.token})
    server.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while True:
            index = {r["name"]: r for r in httpx.post(server.http_url + "/v2/repository/index").json()}
            if index["tampered"]["state"] == "UNAVAILABLE" and index["mlp"]["state"] == "READY":
                break
            assert time.monotonic() < deadline, index
            time.sleep(0.1)
        assert "expected " + wrong in index["tampered"]["reason"]
        assert httpx.get(server.http_url + "/v2/health/ready").status_code == 503
        assert infer(server.http_url, "tampered").status_code == 503
        assert infer(server.http_url, "mlp").status_code == 200
        cache = repo / ".cache" / wrong
        assert not cache.exists() or list(cache.iterdir()) == []
    finally:
        server.stop()
