"""The router between real clients and real runtime processes, with static discovery (no cluster).

Two runtimes serve TorchScript MLPs with different weights (seed 0 as version 1, seed 1 as
version 2), so every answer tells which version computed it. The router runs as a process
(``modelplane router --discovery static``) and is reached with tritonclient, httpx and raw sockets.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from modelplane.testing.cluster import wait_for
from modelplane.testing.router import RouterProcess, infer_body, output_of, write_routes
from modelplane.testing.runtime import RuntimeProcess, make_mlp, mlp_config, write_model

MAX_BODY = 65536
BODY_TIMEOUT_S = 2
ROWS = np.random.default_rng(7).standard_normal((8, 64)).astype(np.float32)


def expected(seed: int, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        result: np.ndarray = make_mlp(seed)(torch.from_numpy(x)).numpy()
    return result


class ResettingBackend:
    """A TCP server that reads a request and answers with a connection reset (RST)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(1.0)
            with contextlib.suppress(OSError):
                conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RuntimeProcess]]:
    """``a``: version 1 (seed 0) of every model; ``b``: version 2 (seed 1) of ``split`` and ``shadowed``."""
    base = tmp_path_factory.mktemp("router-runtimes")
    for name in ("mlp", "split", "shadowed", "sturdy"):
        write_model(base / "a", name, make_mlp(0), mlp_config(name, delay_us=0), version=1)
    for name in ("split", "shadowed"):
        write_model(base / "b", name, make_mlp(1), mlp_config(name, delay_us=0), version=2)
    started: dict[str, RuntimeProcess] = {}
    try:
        for key in ("a", "b"):
            started[key] = RuntimeProcess(base / key).start()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def resetting_backend() -> Iterator[ResettingBackend]:
    backend = ResettingBackend()
    yield backend
    backend.stop()


def entry(server: RuntimeProcess, version: str, weight: int = 100, shadow: int = 0) -> dict[str, Any]:
    return {
        "version": version,
        "http": server.http_url,
        "grpc": server.grpc_address,
        "weight": weight,
        "shadow": shadow,
    }


def base_routes(runtimes: dict[str, RuntimeProcess], resetting: ResettingBackend) -> dict[str, Any]:
    a, b = runtimes["a"], runtimes["b"]
    return {
        "mlp": [entry(a, "1")],
        "split": [entry(a, "1", weight=80), entry(b, "2", weight=20)],
        "shadowed": [entry(a, "1", weight=100), entry(b, "2", weight=0, shadow=100)],
        "broken": [{"version": "1", "http": f"http://127.0.0.1:{resetting.port}"}],
    }


@pytest.fixture(scope="module")
def router(
    runtimes: dict[str, RuntimeProcess],
    resetting_backend: ResettingBackend,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RouterProcess]:
    base = tmp_path_factory.mktemp("router")
    routes = write_routes(base / "routes.yaml", base_routes(runtimes, resetting_backend))
    process = RouterProcess(
        log_path=base / "router.log",
        routes=routes,
        extra_args=[
            "--max-body-bytes", str(MAX_BODY),
            "--body-timeout", str(BODY_TIMEOUT_S),
            "--request-timeout", "20",
            "--drain-timeout", "2",
        ],
    ).start()  # fmt: skip
    try:
        yield process
    finally:
        process.stop()
        print(f"\n----- router log -----\n{process.log_tail()}")


@pytest.fixture
def http(router: RouterProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=router.url, timeout=20.0) as client:
        yield client


def test_tritonclient_http_through_the_router_matches_direct(
    router: RouterProcess, runtimes: dict[str, RuntimeProcess]
) -> None:
    via = httpclient.InferenceServerClient(router.http_address)
    direct = httpclient.InferenceServerClient(runtimes["a"].http_address)
    assert via.is_server_live()
    assert via.is_server_ready()
    assert via.is_model_ready("mlp")
    assert via.get_model_metadata("mlp") == direct.get_model_metadata("mlp")
    for binary in (True, False):
        answers = []
        for client in (via, direct):
            inputs = [httpclient.InferInput("INPUT__0", list(ROWS.shape), "FP32")]
            inputs[0].set_data_from_numpy(ROWS, binary_data=binary)
            outputs = [httpclient.InferRequestedOutput("OUTPUT__0", binary_data=binary)]
            answers.append(client.infer("mlp", inputs, outputs=outputs).as_numpy("OUTPUT__0"))
        np.testing.assert_array_equal(answers[0], answers[1])
        np.testing.assert_allclose(answers[0], expected(0, ROWS), rtol=1e-5, atol=1e-5)
    with pytest.raises(InferenceServerException, match="unknown model"):
        via.get_model_metadata("nope")


def test_tritonclient_grpc_through_the_router_matches_direct(
    router: RouterProcess, runtimes: dict[str, RuntimeProcess]
) -> None:
    via = grpcclient.InferenceServerClient(router.grpc_address)
    direct = grpcclient.InferenceServerClient(runtimes["a"].grpc_address)
    assert via.is_server_live()
    assert via.is_server_ready()
    assert via.is_model_ready("mlp")
    assert via.get_model_metadata("mlp") == direct.get_model_metadata("mlp")
    answers = []
    for client in (via, direct):
        inputs = [grpcclient.InferInput("INPUT__0", list(ROWS.shape), "FP32")]
        inputs[0].set_data_from_numpy(ROWS)
        answers.append(client.infer("mlp", inputs).as_numpy("OUTPUT__0"))
    np.testing.assert_array_equal(answers[0], answers[1])
    np.testing.assert_allclose(answers[0], expected(0, ROWS), rtol=1e-5, atol=1e-5)
    inputs = [grpcclient.InferInput("INPUT__0", list(ROWS.shape), "FP32")]
    inputs[0].set_data_from_numpy(ROWS)
    with pytest.raises(InferenceServerException) as caught:
        via.infer("nope", inputs)
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    assert "unknown model 'nope'" in caught.value.message()


def test_unknown_model_and_malformed_paths_get_v2_errors(http: httpx.Client) -> None:
    response = http.post("/v2/models/nope/infer", json=infer_body(ROWS[:1]))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "unknown model 'nope'"}
    for path in ("/v2/models/../mlp/infer", "/v2/models/mlp/explode", "/v2/models/mlp/versions/x/infer"):
        bad = http.post(path, json=infer_body(ROWS[:1]))
        assert bad.status_code == 404, path
        assert "error" in bad.json()
    # A valid request right after the bad ones still succeeds.
    good = http.post("/v2/models/mlp/infer", json=infer_body(ROWS[:1]))
    assert good.status_code == 200
    np.testing.assert_allclose(output_of(good), expected(0, ROWS[:1]), rtol=1e-5, atol=1e-5)


def test_request_bodies_over_the_limit_get_413(http: httpx.Client) -> None:
    over = http.post(
        "/v2/models/mlp/infer", content=b" " * (MAX_BODY + 1), headers={"content-type": "application/json"}
    )
    assert over.status_code == 413
    assert f"exceeds the limit of {MAX_BODY}" in over.json()["error"]
    # Exactly at the limit the router forwards it (the runtime rejects the blank JSON document).
    at = http.post(
        "/v2/models/mlp/infer", content=b" " * MAX_BODY, headers={"content-type": "application/json"}
    )
    assert at.status_code == 400
    # Without a Content-Length (chunked), the limit holds as the body streams in.
    chunked = http.post("/v2/models/mlp/infer", content=iter([b" " * 40000, b" " * 40000]))
    assert chunked.status_code == 413
    assert http.post("/v2/models/mlp/infer", json=infer_body(ROWS[:1])).status_code == 200


def test_canary_at_20_percent_over_2000_requests(http: httpx.Client, router: RouterProcess) -> None:
    x = ROWS[:1]
    stable, canary = expected(0, x), expected(1, x)
    assert not np.allclose(stable, canary, atol=1e-3)
    body = infer_body(x)

    def send(count: int) -> list[str]:
        seen = []
        with httpx.Client(base_url=router.url, timeout=20.0) as client:
            for _ in range(count):
                response = client.post("/v2/models/split/infer", json=body)
                assert response.status_code == 200, response.text
                out = output_of(response)
                if np.allclose(out, stable, rtol=1e-5, atol=1e-5):
                    seen.append("stable")
                elif np.allclose(out, canary, rtol=1e-5, atol=1e-5):
                    seen.append("canary")
                else:
                    seen.append("neither")
        return seen

    with ThreadPoolExecutor(4) as pool:
        results = [label for part in pool.map(send, [500] * 4) for label in part]
    assert len(results) == 2000
    assert results.count("neither") == 0
    share = 100 * results.count("canary") / len(results)
    print(f"canary share over 2000 requests: {share:.2f}%")
    assert 17.0 <= share <= 23.0


def test_shadow_at_100_percent_keeps_primary_answers_and_counts_mismatches(
    http: httpx.Client, router: RouterProcess
) -> None:
    before = {r: router.metric("modelplane_router_shadow_requests_total", model="shadowed", result=r) for r in
              ("match", "mismatch", "error")}  # fmt: skip
    count = 40
    for i in range(count):
        x = ROWS[i % len(ROWS) : i % len(ROWS) + 1]
        response = http.post("/v2/models/shadowed/infer", json=infer_body(x))
        assert response.status_code == 200
        np.testing.assert_allclose(output_of(response), expected(0, x), rtol=1e-5, atol=1e-5)

    def counted() -> dict[str, float] | None:
        now = {
            r: router.metric("modelplane_router_shadow_requests_total", model="shadowed", result=r)
            - before[r]
            for r in before
        }
        return now if sum(now.values()) >= count else None

    seen = wait_for("every shadow copy to be compared", counted, timeout=30)
    assert seen == {"match": 0, "mismatch": count, "error": 0}
    assert router.metric("modelplane_router_shadow_latency_delta_seconds_count", model="shadowed") >= count


def test_slow_loris_clients_and_resetting_backends_do_not_stall_other_models(
    http: httpx.Client, router: RouterProcess
) -> None:
    slow: list[socket.socket] = []
    try:
        for i in range(20):
            s = socket.create_connection(("127.0.0.1", router.port), timeout=10)
            if i % 2:  # a body that never finishes
                s.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            else:  # headers that never finish
                s.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        with ThreadPoolExecutor(2) as pool:
            broken = pool.submit(
                lambda: [http.post("/v2/models/broken/infer", json=infer_body(ROWS[:1])) for _ in range(5)]
            )
            for _ in range(20):
                response = http.post("/v2/models/mlp/infer", json=infer_body(ROWS[:1]))
                assert response.status_code == 200
            for response in broken.result(timeout=30):
                assert response.status_code == 502
                assert "no endpoint answered" in response.json()["error"]
        # The clients that stalled inside a body get a clear 408 once the body timeout passes.
        for s in slow[1::2]:
            head = s.recv(4096)
            assert head.startswith(b"HTTP/1.1 408"), head
    finally:
        for s in slow:
            s.close()
    assert http.post("/v2/models/mlp/infer", json=infer_body(ROWS[:1])).status_code == 200


def test_a_backend_sigkilled_under_load_costs_no_request_with_retries(
    router: RouterProcess,
    runtimes: dict[str, RuntimeProcess],
    resetting_backend: ResettingBackend,
    tmp_path: Path,
) -> None:
    repository = tmp_path / "k"
    write_model(repository, "sturdy", make_mlp(0), mlp_config("sturdy", delay_us=0), version=1)
    victim = RuntimeProcess(repository).start()
    try:
        routes = base_routes(runtimes, resetting_backend)
        routes["sturdy"] = [entry(runtimes["a"], "1"), entry(victim, "1")]
        assert router.routes is not None
        write_routes(router.routes, routes)
        wait_for(
            "the router to load the new routes", lambda: any(m["name"] == "sturdy" for m in router.routable())
        )
        retries_before = router.metric("modelplane_router_retries_total", model="sturdy")
        x = ROWS[:1]
        want = expected(0, x)
        done = threading.Semaphore(0)
        failures: list[str] = []
        per_worker = 120

        def http_loop() -> None:
            with httpx.Client(base_url=router.url, timeout=20.0) as client:
                for _ in range(per_worker):
                    try:
                        response = client.post("/v2/models/sturdy/infer", json=infer_body(x))
                        if response.status_code != 200:
                            failures.append(f"HTTP {response.status_code}: {response.text}")
                        elif not np.allclose(output_of(response), want, rtol=1e-5, atol=1e-5):
                            failures.append("HTTP: wrong answer")
                    except httpx.HTTPError as exc:
                        failures.append(f"HTTP: {exc!r}")
                    done.release()

        def grpc_loop() -> None:
            client = grpcclient.InferenceServerClient(router.grpc_address)
            for _ in range(per_worker):
                inputs = [grpcclient.InferInput("INPUT__0", list(x.shape), "FP32")]
                inputs[0].set_data_from_numpy(x)
                try:
                    out = client.infer("sturdy", inputs, client_timeout=20).as_numpy("OUTPUT__0")
                    if not np.allclose(out, want, rtol=1e-5, atol=1e-5):
                        failures.append("gRPC: wrong answer")
                except InferenceServerException as exc:
                    failures.append(f"gRPC: {exc}")
                done.release()
            client.close()

        workers = [threading.Thread(target=http_loop) for _ in range(3)] + [
            threading.Thread(target=grpc_loop)
        ]
        for worker in workers:
            worker.start()
        for _ in range(100):  # a quarter of the loop has run: now kill one backend mid-flight
            assert done.acquire(timeout=60)
        assert victim.process is not None
        victim.process.kill()
        victim.process.wait(10)
        for worker in workers:
            worker.join(120)
            assert not worker.is_alive()
        retries = router.metric("modelplane_router_retries_total", model="sturdy") - retries_before
        print(
            f"backend SIGKILLed under load: {len(failures)} failures of {4 * per_worker}, {retries:g} retries"
        )
        assert failures == []
    finally:
        victim.stop()


def test_grpc_errors_are_typed(router: RouterProcess) -> None:
    channel = grpc.insecure_channel(router.grpc_address)
    try:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\xff\xff\xff", timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        channel.close()
