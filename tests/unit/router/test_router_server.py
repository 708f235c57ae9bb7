"""One Router over any Discovery: routes flow in from the source, activation and stop flow back."""

from __future__ import annotations

import asyncio

import httpx

from modelplane.autoscaling.load import parse_router_page
from modelplane.serving.router.balancing import Backend, Endpoint
from modelplane.serving.router.discovery import ApplyRoutes
from modelplane.serving.router.routes import ModelRoute
from modelplane.serving.router.server import Router, RouterSettings
from modelplane.testing.router import FakeOpenAIBackend


class RecordingDiscovery:
    """A discovery source the test drives: it applies tables by hand and records the calls."""

    def __init__(self, first: dict[str, ModelRoute]) -> None:
        self.first = first
        self.apply: ApplyRoutes | None = None
        self.activated: list[str] = []
        self.stopped = False
        self.woken = asyncio.Event()

    async def start(self, apply: ApplyRoutes) -> None:
        self.apply = apply
        apply(self.first)

    async def stop(self) -> None:
        self.stopped = True

    async def activate(self, model: str) -> None:
        self.activated.append(model)
        self.woken.set()


def _asleep(name: str) -> ModelRoute:
    return ModelRoute(name, [Backend("1", 100)], {}, scaled_to_zero=True, backend_model=name.split("/")[-1])


async def test_the_router_serves_the_sources_routes_and_asks_it_to_wake_a_model() -> None:
    discovery = RecordingDiscovery({"default/iris": _asleep("default/iris")})
    router = Router(discovery, RouterSettings(queue_timeout_s=0.2, drain_timeout_s=1.0))
    await router.start(host="127.0.0.1", port=0)
    try:
        base = f"http://127.0.0.1:{router.http_ports[0]}"
        async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
            listed = (await client.get("/v2/models")).json()
            assert [(m["key"], m["state"]) for m in listed] == [("default/iris", "SCALED_TO_ZERO")]
            # No ready endpoint and scaled to zero: the request waits, the source is asked to wake
            # the model, and the wait ends in a clear 503 with Retry-After when nothing comes up.
            answer = await client.post(
                "/v2/models/iris/infer",
                json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            )
            assert discovery.activated == ["default/iris"]
            assert answer.status_code == 503
            assert "retry-after" in answer.headers
            # A new table from the source replaces the old one.
            assert discovery.apply is not None
            discovery.apply({})
            assert (await client.get("/v2/models")).json() == []
    finally:
        await router.stop()
    assert discovery.stopped
    assert router.http.draining


async def test_the_load_report_counts_requests_waiting_for_activation() -> None:
    discovery = RecordingDiscovery({"default/iris": _asleep("default/iris")})
    router = Router(discovery, RouterSettings(queue_timeout_s=5.0, drain_timeout_s=0.5))
    await router.start(host="127.0.0.1", port=0)
    try:
        base = f"http://127.0.0.1:{router.http_ports[0]}"
        async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
            waiting = asyncio.create_task(client.post("/v2/models/iris/infer", json={"inputs": []}))
            await asyncio.wait_for(discovery.woken.wait(), timeout=5)
            assert router.load_report().queued == {"default/iris": 1.0}
            waiting.cancel()
    finally:
        await router.stop()


def _generative(name: str, backends: list[FakeOpenAIBackend]) -> ModelRoute:
    endpoints = [Endpoint(f"127.0.0.1:{b.port}", f"http://127.0.0.1:{b.port}", None) for b in backends]
    return ModelRoute(name, [Backend("1", 100)], {"1": endpoints}, generative=True, backend_model="chat")


async def test_the_engines_queues_are_summed_per_model_in_the_report_and_on_the_page() -> None:
    # The autoscaler learns a generative model's engine queues from the router, which reads every
    # pod anyway to balance: the typed report (local stack) and the page (operator) must agree.
    full, busy = FakeOpenAIBackend("full").start(), FakeOpenAIBackend("busy").start()
    full.waiting, full.running = 3.0, 8.0
    busy.waiting, busy.running = 1.0, 6.0
    discovery = RecordingDiscovery({"default/chat": _generative("default/chat", [full, busy])})
    router = Router(discovery, RouterSettings(load_scrape_interval_s=0.05, drain_timeout_s=0.5))
    await router.start(host="127.0.0.1", port=0)
    try:
        for _ in range(200):
            if full.metrics_reads and busy.metrics_reads:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # one more round, so both readings are stored
        report = router.load_report()
        assert report.engine_waiting == {"default/chat": 4.0}
        assert report.engine_running == {"default/chat": 14.0}
        async with httpx.AsyncClient(trust_env=False) as client:
            page = (await client.get(f"http://127.0.0.1:{router.http_ports[0]}/metrics")).text
        parsed = parse_router_page(page)
        assert parsed.engine_waiting == report.engine_waiting
        assert parsed.engine_running == report.engine_running
        # A pod whose reading goes stale is left out of the sums, not counted as an empty queue.
        busy.stop()
        stale_after = router.load.max_age_s()
        for endpoint in router.table.routes["default/chat"].endpoints["1"]:
            if endpoint.key.endswith(f":{busy.port}") and endpoint.load is not None:
                endpoint.load.at -= stale_after + 1.0
        assert router.load_report().engine_waiting == {"default/chat": 3.0}
    finally:
        await router.stop()
        full.stop()
        busy.stop()
