"""Every V2 call NVIDIA's clients make, directly against a runtime and through the router.

Two runtime processes serve the same MLPs; a router process routes to both. Each call is made with
the four clients (``tritonclient.http``, ``.http.aio``, ``.grpc``, ``.grpc.aio``) against the
runtime and against the router, and is either served correctly or refused with the protocol's
error: statistics through the router are the sum over the model's pods; shared memory and
repository load/unload through the router are refused with a clear message (see the router's
README); calls the runtime does not serve (streaming, trace and log settings) are refused by both.
The runtime's own shared-memory side is tested with the runtime.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from modelplane.local.processes import free_port
from modelplane.testing.router import RouterProcess, write_routes
from modelplane.testing.runtime import RuntimeProcess, make_mlp, mlp_config, write_model

KINDS = ["http", "http.aio", "grpc", "grpc.aio"]
VIA = ["runtime", "router"]
ROWS = np.random.default_rng(11).standard_normal((4, 64)).astype(np.float32)
SHM_REFUSED = "shared memory is not available through the router"


def expected(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        result: np.ndarray = make_mlp(0)(torch.from_numpy(x)).numpy()
    return result


@dataclass(frozen=True)
class Server:
    name: str  # "runtime" or "router"
    http_address: str
    grpc_address: str


@dataclass
class Stack:
    a: RuntimeProcess
    b: RuntimeProcess
    router: RouterProcess
    dead_endpoint: str

    def server(self, via: str) -> Server:
        if via == "router":
            return Server("router", self.router.http_address, self.router.grpc_address)
        return Server("runtime", self.a.http_address, self.a.grpc_address)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Runtimes ``a`` and ``b`` both serve ``mlp`` and ``counted`` (version 1, the same weights);
    ``a`` also serves ``scratch`` (loaded and unloaded directly). The router routes ``mlp`` and
    ``counted`` to both, ``alias`` to ``a``'s ``mlp``, and ``halfdown`` to ``a`` and a dead port."""
    base = tmp_path_factory.mktemp("router-tritonclient")
    for key in ("a", "b"):
        for name in ("mlp", "counted", *(["scratch"] if key == "a" else [])):
            write_model(base / key, name, make_mlp(0), mlp_config(name, delay_us=0), version=1)
    started: list[RuntimeProcess | RouterProcess] = []
    router: RouterProcess | None = None
    try:
        a = RuntimeProcess(base / "a").start()
        started.append(a)
        b = RuntimeProcess(base / "b").start()
        started.append(b)
        dead = f"http://127.0.0.1:{free_port()}"

        def endpoint(server: RuntimeProcess) -> dict[str, Any]:
            return {"version": "1", "http": server.http_url, "grpc": server.grpc_address}

        routes = write_routes(
            base / "routes.yaml",
            {
                "mlp": [endpoint(a), endpoint(b)],
                "counted": [endpoint(a), endpoint(b)],
                "alias": {"endpoints": [endpoint(a)], "backendModel": "mlp"},
                "halfdown": {
                    "endpoints": [endpoint(a), {"version": "1", "http": dead}],
                    "backendModel": "mlp",
                },
            },
        )
        router = RouterProcess(log_path=base / "router.log", routes=routes).start()
        started.append(router)
        yield Stack(a, b, router, dead)
    finally:
        for process in reversed(started):
            process.stop()
        if router is not None:
            print(f"\n----- router log -----\n{router.log_tail()}")


@asynccontextmanager
async def client_of(kind: str, server: Server) -> AsyncIterator[Any]:
    if kind == "http":
        client: Any = httpclient.InferenceServerClient(server.http_address, network_timeout=30)
    elif kind == "http.aio":
        client = httpaio.InferenceServerClient(server.http_address, conn_timeout=30)
    elif kind == "grpc":
        client = grpcclient.InferenceServerClient(server.grpc_address)
    else:
        client = grpcaio.InferenceServerClient(server.grpc_address)
    try:
        yield client
    finally:
        closed = client.close()
        if inspect.isawaitable(closed):
            await closed


async def done(value: Any) -> Any:
    """The value of a call, awaited when the client is an asyncio one."""
    return await value if inspect.isawaitable(value) else value


def is_grpc(kind: str) -> bool:
    return kind.startswith("grpc")


def inputs_of(kind: str, x: np.ndarray, binary: bool = True) -> list[Any]:
    if is_grpc(kind):
        tensor: Any = grpcclient.InferInput("INPUT__0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
    else:
        tensor = httpclient.InferInput("INPUT__0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
    return [tensor]


def outputs_of(kind: str, binary: bool = True) -> list[Any]:
    if is_grpc(kind):
        return [grpcclient.InferRequestedOutput("OUTPUT__0")]
    return [httpclient.InferRequestedOutput("OUTPUT__0", binary_data=binary)]


async def model_ready(client: Any, model: str) -> bool:
    """``is_model_ready``. Over gRPC the router answers NOT_FOUND for a model it has no route for
    (as it answers 404 over HTTP), where the runtime answers ``ready: false``: both mean not ready."""
    try:
        return bool(await done(client.is_model_ready(model)))
    except InferenceServerException as exc:
        if exc.status() != "StatusCode.NOT_FOUND":
            raise
        return False


async def refused(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        await done(call())
    return caught.value


def status_of(error: InferenceServerException) -> str:
    """``"404"`` for HTTP, ``"StatusCode.NOT_FOUND"`` for gRPC."""
    return str(error.status())


# -- health, metadata, configuration, index ---------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("kind", KINDS)
async def test_health_metadata_configuration_and_index(stack: Stack, kind: str, via: str) -> None:
    grpc_json = {"as_json": True} if is_grpc(kind) else {}
    async with (
        client_of(kind, stack.server(via)) as client,
        client_of(kind, stack.server("runtime")) as direct,
    ):
        assert await done(client.is_server_live())
        assert await done(client.is_server_ready())
        assert await done(client.is_model_ready("mlp"))
        assert await done(client.is_model_ready("mlp", "1"))
        server = await done(client.get_server_metadata(**grpc_json))
        assert server["name"] == ("modelplane-router" if via == "router" else "modelplane")
        assert {"binary_tensor_data", "model_configuration", "model_repository", "statistics"} <= set(
            server["extensions"]
        )
        if via == "router":  # the router lists what it serves: no shared memory
            assert not {"system_shared_memory", "cuda_shared_memory"} & set(server["extensions"])
        metadata = await done(client.get_model_metadata("mlp", **grpc_json))
        assert metadata == await done(direct.get_model_metadata("mlp", **grpc_json))
        assert metadata["name"] == "mlp"
        assert [t["name"] for t in metadata["inputs"]] == ["INPUT__0"]
        config = await done(client.get_model_config("mlp", "1", **grpc_json))
        assert config == await done(direct.get_model_config("mlp", "1", **grpc_json))
        index = await done(client.get_model_repository_index(**grpc_json))
        rows = index["models"] if is_grpc(kind) else index
        assert "mlp" in {row["name"] for row in rows}
        assert not await model_ready(client, "nope")


# -- inference --------------------------------------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("kind", KINDS)
async def test_infer_json_binary_compressed_and_async(stack: Stack, kind: str, via: str) -> None:
    want = expected(ROWS)
    async with client_of(kind, stack.server(via)) as client:
        if is_grpc(kind):
            for compression in (None, "gzip", "deflate"):
                answer = await done(
                    client.infer(
                        "mlp",
                        inputs_of(kind, ROWS),
                        outputs=outputs_of(kind),
                        compression_algorithm=compression,
                    )
                )
                np.testing.assert_allclose(answer.as_numpy("OUTPUT__0"), want, rtol=1e-5, atol=1e-5)
            pinned = await done(client.infer("mlp", inputs_of(kind, ROWS), model_version="1"))
            np.testing.assert_allclose(pinned.as_numpy("OUTPUT__0"), want, rtol=1e-5, atol=1e-5)
        else:
            for binary in (True, False):
                for compression in (None, "gzip", "deflate"):
                    answer = await done(
                        client.infer(
                            "mlp",
                            inputs_of(kind, ROWS, binary),
                            outputs=outputs_of(kind, binary),
                            request_compression_algorithm=compression,
                            response_compression_algorithm=compression,
                        )
                    )
                    np.testing.assert_allclose(answer.as_numpy("OUTPUT__0"), want, rtol=1e-5, atol=1e-5)
        if kind == "http":
            pending = [client.async_infer("mlp", inputs_of(kind, ROWS * i)) for i in range(4)]
            for i, request in enumerate(pending):
                result = request.get_result(timeout=30).as_numpy("OUTPUT__0")
                np.testing.assert_allclose(result, expected(ROWS * i), rtol=1e-5, atol=1e-5)
        elif kind == "grpc":
            answers: dict[int, Any] = {}
            finished = threading.Event()

            def callback(i: int, result: Any, error: Any) -> None:
                answers[i] = error if error is not None else result.as_numpy("OUTPUT__0")
                if len(answers) == 4:
                    finished.set()

            for i in range(4):
                client.async_infer(
                    "mlp",
                    inputs_of(kind, ROWS * i),
                    lambda result, error, i=i: callback(i, result, error),
                    compression_algorithm="gzip",
                )
            assert finished.wait(30)
            for i in range(4):
                np.testing.assert_allclose(answers[i], expected(ROWS * i), rtol=1e-5, atol=1e-5)
        error = await refused(lambda: client.infer("nope", inputs_of(kind, ROWS)))
        assert status_of(error) in ("404", "StatusCode.NOT_FOUND")
        assert "unknown model 'nope'" in str(error.message())


# -- statistics -------------------------------------------------------------------------------------


def counters(entry: dict[str, Any]) -> dict[str, int]:
    """The figures that count requests (protobuf's JSON writes them as strings, or leaves out 0)."""
    stats = entry.get("inference_stats", {})
    figures = {
        "inference_count": int(entry.get("inference_count", 0)),
        "execution_count": int(entry.get("execution_count", 0)),
    }
    for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        figures[f"{key}.count"] = int(stats.get(key, {}).get("count", 0))
        figures[f"{key}.ns"] = int(stats.get(key, {}).get("ns", 0))
    figures["batches"] = sum(int(b["compute_infer"]["count"]) for b in entry.get("batch_stats", []))
    figures["batched_rows"] = sum(
        int(b["batch_size"]) * int(b["compute_infer"]["count"]) for b in entry.get("batch_stats", [])
    )
    return figures


def direct_entry(runtime: RuntimeProcess, model: str) -> dict[str, Any]:
    client = httpclient.InferenceServerClient(runtime.http_address)
    try:
        (entry,) = client.get_inference_statistics(model)["model_stats"]
        assert isinstance(entry, dict)
        return entry
    finally:
        client.close()


async def routed_entry(kind: str, stack: Stack, model: str, version: str = "") -> dict[str, Any]:
    async with client_of(kind, stack.server("router")) as client:
        answer = await done(
            client.get_inference_statistics(model, version, **({"as_json": True} if is_grpc(kind) else {}))
        )
    (entry,) = answer["model_stats"]
    assert isinstance(entry, dict)
    return entry


async def test_statistics_through_the_router_are_summed_over_both_pods_and_count_what_was_sent(
    stack: Stack,
) -> None:
    rows = [1, 2, 3, 1, 4, 2, 1, 3, 2, 1]
    a_before, b_before = direct_entry(stack.a, "counted"), direct_entry(stack.b, "counted")
    for i, n in enumerate(rows):
        kind = KINDS[i % len(KINDS)]
        async with client_of(kind, stack.server("router")) as client:
            await done(client.infer("counted", inputs_of(kind, np.full((n, 64), 0.5, np.float32))))
    a_after, b_after = direct_entry(stack.a, "counted"), direct_entry(stack.b, "counted")

    def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
        now, then = counters(after), counters(before)
        return {key: now[key] - then[key] for key in now}

    a_delta, b_delta = delta(a_after, a_before), delta(b_after, b_before)
    sent = {key: a_delta[key] + b_delta[key] for key in a_delta}
    assert sent["success.count"] == len(rows)
    assert sent["inference_count"] == sum(rows) == sent["batched_rows"]
    assert sent["fail.count"] == 0
    assert sent["batches"] == sent["execution_count"] >= 1
    assert a_delta["success.count"] > 0
    assert b_delta["success.count"] > 0

    a_now, b_now = counters(a_after), counters(b_after)
    summed = {key: a_now[key] + b_now[key] for key in a_now}
    for kind in KINDS:
        for version in ("", "1"):
            entry = await routed_entry(kind, stack, "counted", version)
            assert (entry["name"], entry["version"]) == ("counted", "1")
            assert counters(entry) == summed, (kind, version)
            assert int(entry["last_inference"]) == max(a_after["last_inference"], b_after["last_inference"])
    # The model is named as the client named it, not as the pod serves it.
    alias = await routed_entry("http", stack, "alias")
    assert (alias["name"], alias["version"]) == ("alias", "1")
    assert counters(alias) == counters(direct_entry(stack.a, "mlp"))


@pytest.mark.parametrize("kind", KINDS)
async def test_statistics_refusals_through_the_router(stack: Stack, kind: str) -> None:
    async with client_of(kind, stack.server("router")) as client:
        error = await refused(lambda: client.get_inference_statistics())
        assert status_of(error) in ("400", "StatusCode.INVALID_ARGUMENT")
        assert "name one, GET /v2/models/NAME/stats" in str(error.message())
        error = await refused(lambda: client.get_inference_statistics("halfdown"))
        assert status_of(error) in ("503", "StatusCode.UNAVAILABLE")
        message = str(error.message())
        assert "incomplete" in message
        assert "1 of 2 pods failed to answer" in message
        assert stack.dead_endpoint in message
        error = await refused(lambda: client.get_inference_statistics("nope"))
        assert status_of(error) in ("404", "StatusCode.NOT_FOUND")
        error = await refused(lambda: client.get_inference_statistics("mlp", "9"))
        assert status_of(error) in ("404", "StatusCode.NOT_FOUND")
        assert await done(client.is_model_ready("mlp"))  # a good call right after the bad ones
    async with client_of(kind, stack.server("runtime")) as direct:  # the runtime lists every model
        answer = await done(direct.get_inference_statistics(**({"as_json": True} if is_grpc(kind) else {})))
        assert {"mlp", "counted", "scratch"} <= {entry["name"] for entry in answer["model_stats"]}


# -- shared memory ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_shared_memory_through_the_router_is_refused_with_a_clear_message(
    stack: Stack, kind: str
) -> None:
    bad_request = "StatusCode.INVALID_ARGUMENT" if is_grpc(kind) else "400"
    async with client_of(kind, stack.server("router")) as client:
        calls = [
            lambda: client.get_system_shared_memory_status(),
            lambda: client.get_system_shared_memory_status("region"),
            lambda: client.register_system_shared_memory("region", "/modelplane-test", 1024),
            lambda: client.unregister_system_shared_memory("region"),
            lambda: client.unregister_system_shared_memory(),
            lambda: client.get_cuda_shared_memory_status(),
            lambda: client.register_cuda_shared_memory("gpu", b"\0" * 64, 0, 1024),
            lambda: client.unregister_cuda_shared_memory("gpu"),
        ]
        for call in calls:
            error = await refused(call)
            assert status_of(error) == bad_request
            assert SHM_REFUSED in str(error.message())
        # Inference naming a region, as an input or as an output: refused, never forwarded.
        with_region = inputs_of(kind, ROWS)
        with_region[0].set_shared_memory("region", ROWS.nbytes)
        out_region = outputs_of(kind)
        out_region[0].set_shared_memory("out", 4 * 10 * 4)
        cases: list[tuple[list[Any], list[Any] | None, dict[str, Any]]] = [
            (with_region, None, {}),
            (inputs_of(kind, ROWS), out_region, {}),
        ]
        if is_grpc(kind):
            cases.append((with_region, None, {"compression_algorithm": "gzip"}))
        else:
            cases.append((inputs_of(kind, ROWS, binary=False), out_region, {}))
            cases.append((with_region, None, {"request_compression_algorithm": "gzip"}))
            cases.append((inputs_of(kind, ROWS), out_region, {"request_compression_algorithm": "deflate"}))
        for inputs, outputs, extra in cases:
            error = await refused(
                lambda inputs=inputs, outputs=outputs, extra=extra: client.infer(
                    "mlp", inputs, outputs=outputs, **extra
                )
            )
            assert status_of(error) == bad_request
            message = str(error.message())
            assert SHM_REFUSED in message
            assert "names a shared-memory region" in message
        answer = await done(client.infer("mlp", inputs_of(kind, ROWS)))  # fine right after
        np.testing.assert_allclose(answer.as_numpy("OUTPUT__0"), expected(ROWS), rtol=1e-5, atol=1e-5)


def test_a_shared_memory_key_spelled_with_escapes_is_refused_too(stack: Stack) -> None:
    escaped = (
        b'{"inputs": [{"name": "INPUT__0", "shape": [1, 64], "datatype": "FP32", '
        b'"parameters": {"\\u0073hared_memory_region": "region", "shared_memory_byte_size": 256}}]}'
    )
    plain = (
        b'{"inputs": [{"name": "INPUT__0", "shape": [1, 1], "datatype": "BYTES", '
        b'"data": ["shared_memory_region \\u00e9"]}]}'
    )
    with httpx.Client(base_url=stack.router.url, timeout=30) as http:
        for body, encoding in ((escaped, None), (zlib.compress(escaped), "deflate")):
            headers = {
                "content-type": "application/json",
                **({"content-encoding": encoding} if encoding else {}),
            }
            answer = http.post("/v2/models/mlp/infer", content=body, headers=headers)
            assert answer.status_code == 400
            assert "names a shared-memory region" in answer.json()["error"]
        # A tensor's data that merely mentions the key is not a region: the runtime answers it.
        answer = http.post(
            "/v2/models/mlp/infer", content=plain, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 400
        assert "shared" not in answer.json()["error"]


# -- repository load / unload -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_load_and_unload_are_refused_by_the_router_and_served_by_the_runtime(
    stack: Stack, kind: str
) -> None:
    async with client_of(kind, stack.server("router")) as client:
        for call, action in ((client.load_model, "load"), (client.unload_model, "unload")):
            error = await refused(lambda call=call: call("mlp"))
            assert status_of(error) in ("400", "StatusCode.INVALID_ARGUMENT")
            message = str(error.message())
            assert f"model {action} is refused by the router" in message
            assert "ModelDeployment" in message
        assert await done(client.is_model_ready("mlp"))
    async with client_of(kind, stack.server("runtime")) as direct:
        await done(direct.unload_model("scratch"))
        assert not await model_ready(direct, "scratch")
        await done(direct.load_model("scratch"))
        assert await model_ready(direct, "scratch")


# -- what neither serves ----------------------------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
def test_stream_infer_is_unimplemented(stack: Stack, via: str) -> None:
    client = grpcclient.InferenceServerClient(stack.server(via).grpc_address)
    errors: list[InferenceServerException] = []
    got = threading.Event()

    def callback(result: Any, error: InferenceServerException | None) -> None:
        if error is not None:
            errors.append(error)
            got.set()

    try:
        client.start_stream(callback)
        # The server may refuse the stream before the request is sent: the error is the callback's.
        with contextlib.suppress(InferenceServerException):
            client.async_stream_infer("mlp", inputs_of("grpc", ROWS))
        assert got.wait(30)
    finally:
        client.stop_stream()
        client.close()
    assert errors[0].status() == "StatusCode.UNIMPLEMENTED"


@pytest.mark.parametrize("via", VIA)
async def test_stream_infer_is_unimplemented_for_the_asyncio_client(stack: Stack, via: str) -> None:
    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": "mlp", "inputs": inputs_of("grpc", ROWS)}

    async with client_of("grpc.aio", stack.server(via)) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in client.stream_infer(requests()):
                pass
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("kind", KINDS)
async def test_trace_and_log_settings_are_refused_with_the_protocols_error(
    stack: Stack, kind: str, via: str
) -> None:
    unserved = "StatusCode.UNIMPLEMENTED" if is_grpc(kind) else "404"
    async with client_of(kind, stack.server(via)) as client:
        for call in (
            lambda: client.get_trace_settings(),
            lambda: client.get_trace_settings("mlp"),
            lambda: client.update_trace_settings("mlp", {"trace_level": ["OFF"]}),
            lambda: client.get_log_settings(),
            lambda: client.update_log_settings({"log_info": False}),
        ):
            error = await refused(call)
            assert status_of(error) == unserved
        assert await done(client.is_server_live())
