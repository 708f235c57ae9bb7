"""The router's own answers over real loopback sockets: statistics summed over fake pods (HTTP and
gRPC), server metadata, and the refusals (shared memory, repository control) that never reach a pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from aiohttp import web
from tritonclient.grpc import service_pb2

from modelplane.local.processes import free_port
from modelplane.serving.router.balancing import Backend, Endpoint
from modelplane.serving.router.discovery import ApplyRoutes
from modelplane.serving.router.extensions import ALL_MODELS_STATISTICS_REFUSED, SHARED_MEMORY_REFUSED
from modelplane.serving.router.routes import ModelRoute
from modelplane.serving.router.server import Router, RouterSettings


class FakePod:
    """Answers ``GET /v2/models/served/versions/V/stats`` with ``n`` one-row requests; records the rest."""

    def __init__(self, n: int, last: int, answer: str = "ok") -> None:
        self.n = n
        self.last = last
        self.answer = answer  # "ok", "error" (500) or "junk" (not statistics)
        self.paths: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> FakePod:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        if not request.path.endswith("/stats"):
            return web.json_response({"model_name": "served", "outputs": []})
        if self.answer == "error":
            return web.json_response({"error": "boom"}, status=500)
        if self.answer == "junk":
            return web.json_response({"model_stats": "nope"})
        version = request.path.split("/")[-2]
        n = self.n
        entry = {
            "name": "served",
            "version": version,
            "last_inference": self.last,
            "inference_count": n,
            "execution_count": n,
            "inference_stats": {"success": {"count": n, "ns": 10 * n}, "queue": {"count": n, "ns": n}},
            "batch_stats": [{"batch_size": 1, "compute_infer": {"count": n, "ns": 5 * n}}],
        }
        return web.json_response({"model_stats": [entry]})

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(key=f"pod-{self.port}", http=f"http://127.0.0.1:{self.port}", grpc=None)


class StaticTable:
    def __init__(self, routes: dict[str, ModelRoute]) -> None:
        self.routes = routes

    async def start(self, apply: ApplyRoutes) -> None:
        apply(self.routes)

    async def stop(self) -> None:
        pass

    async def activate(self, model: str) -> None:
        raise AssertionError("statistics never wake a model")


def route(name: str, endpoints: dict[str, list[Endpoint]], **extra: Any) -> ModelRoute:
    backends = [Backend(version, 100 if version == "1" else 0) for version in endpoints] or [
        Backend("1", 100)
    ]
    return ModelRoute(name, backends, endpoints, backend_model="served", **extra)


@contextlib.asynccontextmanager
async def running(routes: dict[str, ModelRoute]) -> AsyncIterator[tuple[httpx.AsyncClient, grpc.aio.Channel]]:
    router = Router(StaticTable(routes), RouterSettings(drain_timeout_s=0.5))
    grpc_port = free_port()
    await router.start(host="127.0.0.1", port=0, grpc_address=f"127.0.0.1:{grpc_port}")
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{router.http_ports[0]}", trust_env=False) as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
        ):
            yield http, channel
    finally:
        await router.stop()


@contextlib.asynccontextmanager
async def pods(*specs: tuple[int, int, str]) -> AsyncIterator[list[FakePod]]:
    started = [await FakePod(n, last, answer).start() for n, last, answer in specs]
    try:
        yield started
    finally:
        for pod in started:
            await pod.stop()


async def grpc_statistics(channel: grpc.aio.Channel, name: str, version: str = "") -> Any:
    call = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelStatistics",
        request_serializer=service_pb2.ModelStatisticsRequest.SerializeToString,
        response_deserializer=service_pb2.ModelStatisticsResponse.FromString,
    )
    return await call(service_pb2.ModelStatisticsRequest(name=name, version=version), timeout=10)


async def test_statistics_are_summed_over_every_pod_of_every_version() -> None:
    async with pods((3, 100, "ok"), (5, 300, "ok"), (2, 200, "ok")) as (a, b, c):
        routes = {"iris": route("iris", {"1": [a.endpoint, b.endpoint], "2": [c.endpoint]})}
        async with running(routes) as (http, channel):
            answer = await http.get("/v2/models/iris/stats")
            assert answer.status_code == 200
            one, two = answer.json()["model_stats"]
            assert (one["name"], one["version"], two["version"]) == ("iris", "1", "2")
            assert one["inference_count"] == 8
            assert one["last_inference"] == 300
            assert one["inference_stats"]["success"] == {"count": 8, "ns": 80}
            assert one["batch_stats"] == [{"batch_size": 1, "compute_infer": {"count": 8, "ns": 40}}]
            assert two["inference_count"] == 2
            # Every pod was asked for its version under the runtime's name.
            assert a.paths == b.paths == ["/v2/models/served/versions/1/stats"]
            assert c.paths == ["/v2/models/served/versions/2/stats"]

            pinned = (await http.get("/v2/models/iris/versions/2/stats")).json()["model_stats"]
            assert [(m["version"], m["inference_count"]) for m in pinned] == [("2", 2)]

            by_grpc = await grpc_statistics(channel, "iris", "1")
            (stats,) = by_grpc.model_stats
            assert (stats.name, stats.version, stats.inference_count, stats.last_inference) == (
                "iris",
                "1",
                8,
                300,
            )
            assert (stats.inference_stats.success.count, stats.inference_stats.success.ns) == (8, 80)
            assert stats.batch_stats[0].batch_size == 1
            assert stats.batch_stats[0].compute_infer.count == 8


@pytest.mark.parametrize(
    ("answer", "said"),
    [("error", "answered 500: boom"), ("junk", "answered something that is not Triton's statistics")],
)
async def test_a_pod_that_fails_makes_the_answer_a_503_naming_it_never_a_partial_sum(
    answer: str, said: str
) -> None:
    async with pods((3, 100, "ok"), (5, 300, answer)) as (good, bad):
        dead = Endpoint(key="dead-pod", http=f"http://127.0.0.1:{free_port()}", grpc=None)
        async with running({"iris": route("iris", {"1": [good.endpoint, bad.endpoint, dead]})}) as (
            http,
            channel,
        ):
            refused = await http.get("/v2/models/iris/stats")
            assert refused.status_code == 503
            assert "retry-after" in refused.headers
            message = refused.json()["error"]
            assert "incomplete" in message
            assert "2 of 3 pods failed to answer" in message
            assert f"{bad.endpoint.key}: {said}" in message
            assert "dead-pod: cannot connect" in message
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await grpc_statistics(channel, "iris")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert caught.value.details() == message


async def test_statistics_refusals() -> None:
    asleep = route("asleep", {}, scaled_to_zero=True)
    async with (
        pods((1, 1, "ok")) as (pod,),
        running({"iris": route("iris", {"1": [pod.endpoint]}), "asleep": asleep}) as (
            http,
            channel,
        ),
    ):
        every = await http.get("/v2/models/stats")
        assert (every.status_code, every.json()) == (400, {"error": ALL_MODELS_STATISTICS_REFUSED})
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await grpc_statistics(channel, "")
        assert (caught.value.code(), caught.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            ALL_MODELS_STATISTICS_REFUSED,
        )
        unknown = await http.get("/v2/models/nope/stats")
        assert (unknown.status_code, unknown.json()) == (404, {"error": "unknown model 'nope'"})
        version = await http.get("/v2/models/iris/versions/7/stats")
        assert (version.status_code, version.json()) == (404, {"error": "model 'iris' has no version '7'"})
        sleeping = await http.get("/v2/models/asleep/stats")
        assert sleeping.status_code == 503
        assert "scaled to zero" in sleeping.json()["error"]
        assert pod.paths == []


async def test_server_metadata_and_the_refusals_never_reach_a_pod() -> None:
    async with (
        pods((1, 1, "ok")) as (pod,),
        running({"iris": route("iris", {"1": [pod.endpoint]})}) as (http, channel),
    ):
        metadata = (await http.get("/v2")).json()
        assert metadata["name"] == "modelplane-router"
        assert "statistics" in metadata["extensions"]
        for path in ("/v2/systemsharedmemory/region/r/register", "/v2/cudasharedmemory/status"):
            answer = await http.post(path, json={})
            assert (answer.status_code, answer.json()) == (400, {"error": SHARED_MEMORY_REFUSED})
        unload = await http.post("/v2/repository/models/iris/unload", json={})
        assert unload.status_code == 400
        assert "ModelDeployment" in unload.json()["error"]
        body = {
            "inputs": [
                {"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"shared_memory_region": "r"}}
            ]
        }
        for _ in range(2):  # the second on a warm connection: the fast path's check
            infer = await http.post("/v2/models/iris/infer", content=json.dumps(body))
            assert infer.status_code == 400
            assert SHARED_MEMORY_REFUSED in infer.json()["error"]
        assert (await http.post("/v2/models/iris/infer", json={"inputs": []})).status_code == 200
        assert pod.paths == ["/v2/models/served/versions/1/infer"]  # only the ordinary request

        for method in ("SystemSharedMemoryRegister", "CudaSharedMemoryStatus", "RepositoryModelLoad"):
            call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(b"", timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert ("ModelDeployment" if method.startswith("Repository") else SHARED_MEMORY_REFUSED) in str(
                caught.value.details()
            )
        infer_call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
        )
        request = service_pb2.ModelInferRequest(model_name="iris")
        request.inputs.add(name="x", datatype="FP32", shape=[1]).parameters[
            "shared_memory_region"
        ].string_param = "r"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await infer_call(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert SHARED_MEMORY_REFUSED in str(caught.value.details())
