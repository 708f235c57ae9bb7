"""Prometheus metrics of the router, per model (and version where it matters).

Besides the usual counters and gauges, the router integrates each model's concurrency over time
(:class:`ConcurrencyIntegrator`): ``modelplane_router_concurrency_seconds_total{model}`` is the
area under the in-flight-plus-queued curve, in request-seconds. A scraper that divides the growth
of that counter by the time between two scrapes gets the exact *average* concurrency over the
interval, where a point sample of the in-flight gauge swings with whatever happened to be in
flight at that instant (Knative's queue-proxy reports the same time-averaged figure).
``modelplane_router_uptime_seconds`` is the clock the areas are read at, so the scraper can use
the router's own interval (free of scrape latency) and see a restart as the clock going back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


CONCURRENCY_SECONDS = "modelplane_router_concurrency_seconds"  # exposed with the suffix ``_total``
UPTIME_SECONDS = "modelplane_router_uptime_seconds"


class ConcurrencyIntegrator:
    """The integral over time of one model's requests in the router (in flight plus queued).

    It runs on the request path, so a change costs one clock read and a few float operations and
    takes no lock: the router's front ends (HTTP and gRPC) share one asyncio loop. The area is only
    brought up to date on a change; :meth:`area_at` adds the part since the last change without
    writing anything, so a scrape from another thread cannot corrupt it.
    """

    __slots__ = ("_clock", "area", "level", "since")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.level = 0
        self.since = clock()
        self.area = 0.0

    def add(self, delta: int) -> None:
        """``delta`` requests arrived (+1) or left (-1) now."""
        now = self._clock()
        self.area += self.level * (now - self.since)
        self.since = now
        self.level += delta

    def area_at(self, now: float) -> float:
        """Request-seconds accumulated up to ``now`` (a reading of the same clock)."""
        return self.area + self.level * max(0.0, now - self.since)


class ConcurrencyCollector(Collector):
    """Exposes every model's integrated concurrency, brought up to the moment of the scrape."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.models: dict[str, ConcurrencyIntegrator] = {}

    def model(self, model: str) -> ConcurrencyIntegrator:
        integrator = self.models.get(model)
        if integrator is None:
            integrator = self.models[model] = ConcurrencyIntegrator(self._clock)
        return integrator

    def describe(self) -> Iterator[Metric]:
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._clock())

    def _families(self, now: float | None) -> Iterator[Metric]:
        area = CounterMetricFamily(
            CONCURRENCY_SECONDS,
            "Integral over time of requests in flight plus queued, by model, in request-seconds "
            "(its rate is the average concurrency: the autoscaler's signal)",
            labels=["model"],
        )
        uptime = GaugeMetricFamily(
            UPTIME_SECONDS, "Seconds since this router's metrics began (the clock of the concurrency counter)"
        )
        if now is not None:
            for model, integrator in list(self.models.items()):
                area.add_metric([model], integrator.area_at(now))
            uptime.add_metric([], now - self.started)
        yield area
        yield uptime


class RouterMetrics:
    """All router metrics in one registry (one per router instance, so tests can run several)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.concurrency = ConcurrencyCollector(clock)
        r.register(self.concurrency)
        self.requests = Counter(
            "modelplane_router_requests_total",
            "Requests answered, by model, version and status code",
            ["model", "version", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "modelplane_router_request_duration_seconds",
            "Time from request to response, by model",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "modelplane_router_in_flight_requests",
            "Requests in flight, by model, at the moment of the scrape",
            ["model"],
            registry=r,
        )
        self.queued = Gauge(
            "modelplane_router_queued_requests",
            "Requests waiting for a scaled-to-zero model (point in time)",
            ["model"],
            registry=r,
        )
        self.retries = Counter(
            "modelplane_router_retries_total", "Retries to another endpoint", ["model"], registry=r
        )
        self.ejections = Counter(
            "modelplane_router_ejections_total",
            "Endpoints ejected after consecutive failures",
            ["model"],
            registry=r,
        )
        self.shadow = Counter(
            "modelplane_router_shadow_requests_total",
            "Shadow copies, by outcome (match, mismatch, error)",
            ["model", "result"],
            registry=r,
        )
        self.shadow_latency_delta = Histogram(
            "modelplane_router_shadow_latency_delta_seconds",
            "Shadow latency minus primary latency",
            ["model"],
            buckets=(-1, -0.1, -0.01, -0.001, 0, 0.001, 0.01, 0.1, 1),
            registry=r,
        )

        # Labelled children of the per-request metrics, looked up once: ``.labels()`` takes a lock
        # and builds a key on every call, a measurable share of the router's CPU per request.
        self._children: dict[tuple[str, ...], Any] = {}

    def request_count(self, model: str, version: str, code: str) -> Counter:
        key = ("requests", model, version, code)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(model=model, version=version, code=code)
        return child

    def request_latency(self, model: str) -> Histogram:
        key = ("latency", model)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.latency.labels(model=model)
        return child

    def model_in_flight(self, model: str) -> Gauge:
        key = ("in_flight", model)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.in_flight.labels(model=model)
        return child

    def model_concurrency(self, model: str) -> ConcurrencyIntegrator:
        """The model's integrator: ``add(1)`` when a request enters, ``add(-1)`` when it leaves."""
        return self.concurrency.model(model)
