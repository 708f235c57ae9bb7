"""Reading the load of generative runtimes: each endpoint's ``/metrics``, about once a second.

For every endpoint of a route marked ``generative``, the scraper reads the engine's waiting queue,
running batch and KV-cache use (``vllm:num_requests_waiting``, ``vllm:num_requests_running``,
``vllm:kv_cache_usage_perc``) and stores them on the endpoint (:class:`EndpointLoad`) with the
router's own in-flight count at that moment, for :func:`~.balancing.load_score`. Each read is
bounded by ``timeout_s``; a failed read leaves the last reading to go stale, after which balancing
falls back to the router's in-flight count. The readings are also exposed on the router's
``/metrics`` (``modelplane_router_backend_*``, by endpoint) so operators see what it balances on,
and summed per model (``modelplane_router_engine_requests_*``, see :meth:`LoadScraper.engine_load`)
for the autoscaler, which thus learns the engines' queues without reading every pod itself.

Interpreted, off the request path (one task per router).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelplane.api.metrics import ROUTER_ENGINE_RUNNING, ROUTER_ENGINE_WAITING
from modelplane.serving.router.balancing import Endpoint, EndpointLoad
from modelplane.serving.router.openai_api import parse_engine_load
from modelplane.serving.router.routes import RouteTable
from modelplane.serving.router.stream_upstream import StreamPool

log = logging.getLogger("modelplane.router.load")

MAX_METRICS_BYTES = 4 * 1024 * 1024


class LoadScraper(Collector):
    """The background reader of generative endpoints' load, and the collector that exposes it."""

    def __init__(
        self,
        table: RouteTable,
        interval_s: float = 1.0,
        timeout_s: float = 0.5,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.table = table
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.pool = StreamPool(connect_timeout_s=timeout_s, read_timeout_s=timeout_s)
        self._task: asyncio.Task[None] | None = None
        self._failing: set[str] = set()  # endpoints whose last read failed (logged once)
        if registry is not None:
            registry.register(self)

    def endpoints(self) -> dict[str, Endpoint]:
        """The endpoints to read: those of generative routes, by key."""
        found: dict[str, Endpoint] = {}
        for route in self.table.routes.values():
            if route.generative:
                for endpoints in route.endpoints.values():
                    for endpoint in endpoints:
                        found.setdefault(endpoint.key, endpoint)
        return found

    def max_age_s(self) -> float:
        """How old a reading may be and still count in :meth:`engine_load`: three missed reads."""
        return 3 * max(self.interval_s, self.timeout_s)

    def engine_load(self, now: float) -> tuple[dict[str, float], dict[str, float]]:
        """Waiting and running sequences per generative model, summed over its endpoints' fresh readings.

        A model appears once at least one of its endpoints has a fresh reading; endpoints whose
        reading is stale (or missing) add nothing, so a pod that stopped answering is not counted
        as idle capacity with an empty queue, only left out.
        """
        waiting: dict[str, float] = {}
        running: dict[str, float] = {}
        for route in self.table.routes.values():
            if not route.generative:
                continue
            seen: set[str] = set()
            for endpoints in route.endpoints.values():
                for endpoint in endpoints:
                    load = endpoint.load
                    if endpoint.key in seen or load is None or now - load.at > self.max_age_s():
                        continue
                    seen.add(endpoint.key)
                    waiting[route.name] = waiting.get(route.name, 0.0) + load.waiting
                    running[route.name] = running.get(route.name, 0.0) + load.running
        return waiting, running

    async def scrape_once(self) -> None:
        endpoints = list(self.endpoints().values())
        if endpoints:
            await asyncio.gather(*(self.scrape(endpoint) for endpoint in endpoints))

    async def scrape(self, endpoint: Endpoint) -> None:
        """Read one endpoint's load; on failure leave the last reading to go stale."""
        try:
            async with asyncio.timeout(self.timeout_s):
                stream = await self.pool.open(endpoint.authority, "GET", "/metrics", [], b"")
                try:
                    text = await stream.read_all(MAX_METRICS_BYTES)
                finally:
                    stream.close()
            if stream.status != 200:
                raise ValueError(f"/metrics answered {stream.status}")
            reading = parse_engine_load(text.decode("utf-8", "replace"))
            if reading is None:
                raise ValueError("/metrics has no vllm:num_requests_waiting")
        except Exception as exc:  # any failure: the reading goes stale, balancing falls back
            if endpoint.key not in self._failing:
                self._failing.add(endpoint.key)
                log.warning("cannot read the load of %s: %s", endpoint.key, exc or type(exc).__name__)
            return
        self._failing.discard(endpoint.key)
        waiting, running, kv_cache = reading
        endpoint.load = EndpointLoad(waiting, running, kv_cache, time.monotonic(), endpoint.outstanding)

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await self.scrape_once()
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.pool.close()

    # -- exposition ---------------------------------------------------------------------------------

    def describe(self) -> Iterator[Metric]:
        yield from self._families(include=False)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(include=True)

    def _families(self, include: bool) -> Iterator[Metric]:
        yield from self._endpoint_families(include)
        yield from self._model_families(include)

    def _model_families(self, include: bool) -> Iterator[Metric]:
        waiting = GaugeMetricFamily(
            ROUTER_ENGINE_WAITING,
            "Sequences waiting in a generative model's engines, summed over its pods as last read",
            labels=["model"],
        )
        running = GaugeMetricFamily(
            ROUTER_ENGINE_RUNNING,
            "Sequences running in a generative model's engines, summed over its pods as last read",
            labels=["model"],
        )
        if include:
            waiting_by_model, running_by_model = self.engine_load(time.monotonic())
            for model, value in waiting_by_model.items():
                waiting.add_metric([model], value)
            for model, value in running_by_model.items():
                running.add_metric([model], value)
        yield waiting
        yield running

    def _endpoint_families(self, include: bool) -> Iterator[Metric]:
        families = (
            GaugeMetricFamily(
                "modelplane_router_backend_requests_waiting",
                "Requests waiting in a generative endpoint's engine, as last read",
                labels=["endpoint"],
            ),
            GaugeMetricFamily(
                "modelplane_router_backend_requests_running",
                "Requests running in a generative endpoint's engine, as last read",
                labels=["endpoint"],
            ),
            GaugeMetricFamily(
                "modelplane_router_backend_kv_cache_usage",
                "KV-cache use (0..1) of a generative endpoint's engine, as last read",
                labels=["endpoint"],
            ),
            GaugeMetricFamily(
                "modelplane_router_backend_load_age_seconds",
                "Seconds since a generative endpoint's load was last read",
                labels=["endpoint"],
            ),
        )
        if include:
            now = time.monotonic()
            for key, endpoint in self.endpoints().items():
                load = endpoint.load
                if load is None:
                    continue
                for family, value in zip(
                    families, (load.waiting, load.running, load.kv_cache, now - load.at), strict=True
                ):
                    family.add_metric([key], value)
        yield from families
