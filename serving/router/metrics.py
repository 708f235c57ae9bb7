"""Prometheus metrics of the router, per model (and version where it matters).

Besides the usual counters and gauges, the router integrates each model's concurrency over time
(:class:`ConcurrencyIntegrator`): ``modelplane_router_concurrency_seconds_total{model}`` is the
area under the in-flight-plus-queued curve, in request-seconds. A scraper that divides the growth
of that counter by the time between two scrapes gets the exact *average* concurrency over the
interval, where a point sample of the in-flight gauge swings with whatever happened to be in
flight at that instant (Knative's queue-proxy reports the same time-averaged figure).
``modelplane_router_uptime_seconds`` is the clock the areas are read at, so the scraper can use
the router's own interval (free of scrape latency) and see a restart as the clock going back.

The per-request metrics (requests, latency, in flight) are plain Python numbers behind a collector
(:class:`RequestMetrics`), not ``prometheus_client`` metric objects: those take a lock on every
update, which the router's single event loop does not need, and the latency histogram searches its
buckets in Python. Scrapes read them on the same loop; the exposition is the same.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from modelplane.api.metrics import (
    ROUTER_CONCURRENCY_SECONDS,
    ROUTER_IN_FLIGHT,
    ROUTER_QUEUED,
    ROUTER_REQUEST_DURATION,
    ROUTER_REQUESTS,
    ROUTER_UPTIME,
    LoadReport,
    counter_family,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


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
        self.clock = clock
        self.started = clock()
        self.models: dict[str, ConcurrencyIntegrator] = {}

    def model(self, model: str) -> ConcurrencyIntegrator:
        integrator = self.models.get(model)
        if integrator is None:
            integrator = self.models[model] = ConcurrencyIntegrator(self.clock)
        return integrator

    def describe(self) -> Iterator[Metric]:
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.clock())

    def _families(self, now: float | None) -> Iterator[Metric]:
        area = CounterMetricFamily(
            counter_family(ROUTER_CONCURRENCY_SECONDS),
            "Integral over time of requests in flight plus queued, by model, in request-seconds "
            "(its rate is the average concurrency: the autoscaler's signal)",
            labels=["model"],
        )
        uptime = GaugeMetricFamily(
            ROUTER_UPTIME, "Seconds since this router's metrics began (the clock of the concurrency counter)"
        )
        if now is not None:
            for model, integrator in list(self.models.items()):
                area.add_metric([model], integrator.area_at(now))
            uptime.add_metric([], now - self.started)
        yield area
        yield uptime


class Tally:
    """A counter or gauge child: a number the loop updates without a lock."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class LatencyTally:
    """A histogram child: per-bucket counts (found by bisection) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        buckets, running = [], 0
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            buckets.append((bound, float(running)))
        return buckets


class RequestMetrics(Collector):
    """Requests by model, version and code; latency by model; in flight by model (lock-free)."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.requests: dict[tuple[str, str, str], Tally] = {}
        self.latency: dict[str, LatencyTally] = {}
        self.in_flight: dict[str, Tally] = {}

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        yield from self._families()

    def _families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            counter_family(ROUTER_REQUESTS),
            "Requests answered, by model, version and status code",
            labels=["model", "version", "code"],
        )
        for labels, tally in list(self.requests.items()):
            requests.add_metric(labels, tally.value)
        latency = HistogramMetricFamily(
            ROUTER_REQUEST_DURATION, "Time from request to response, by model", labels=["model"]
        )
        for model, histogram in list(self.latency.items()):
            latency.add_metric([model], histogram.cumulative(), histogram.sum)
        in_flight = GaugeMetricFamily(
            ROUTER_IN_FLIGHT, "Requests in flight, by model, at the moment of the scrape", labels=["model"]
        )
        for model, tally in list(self.in_flight.items()):
            in_flight.add_metric([model], tally.value)
        yield requests
        yield latency
        yield in_flight


class RouterMetrics:
    """All router metrics in one registry (one per router instance, so tests can run several)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if registry is None:
            registry = CollectorRegistry()
            # CPU, memory and open files of the router process (``process_cpu_seconds_total``...):
            # one router process uses at most one core, so its CPU is what to size routers by.
            ProcessCollector(registry=registry)
        self.registry = registry
        r = self.registry
        self.concurrency = ConcurrencyCollector(clock)
        r.register(self.concurrency)
        self.per_request = RequestMetrics()
        r.register(self.per_request)
        self.queued = Gauge(
            ROUTER_QUEUED,
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

    def request_count(self, model: str, version: str, code: str) -> Tally:
        key = (model, version, code)
        tally = self.per_request.requests.get(key)
        if tally is None:
            tally = self.per_request.requests[key] = Tally()
        return tally

    def request_latency(self, model: str) -> LatencyTally:
        histogram = self.per_request.latency.get(model)
        if histogram is None:
            histogram = self.per_request.latency[model] = LatencyTally(self.per_request.buckets)
        return histogram

    def model_in_flight(self, model: str) -> Tally:
        tally = self.per_request.in_flight.get(model)
        if tally is None:
            tally = self.per_request.in_flight[model] = Tally()
        return tally

    def load_report(self) -> LoadReport:
        """The figures of the four load metrics, typed: what a scrape of them would parse to."""
        now = self.concurrency.clock()
        queued = {
            sample.labels["model"]: max(0.0, sample.value)
            for family in self.queued.collect()
            for sample in family.samples
        }
        return LoadReport(
            in_flight={model: max(0.0, tally.value) for model, tally in self.per_request.in_flight.items()},
            queued=queued,
            areas={model: integrator.area_at(now) for model, integrator in self.concurrency.models.items()},
            uptime=now - self.concurrency.started,
        )

    def model_concurrency(self, model: str) -> ConcurrencyIntegrator:
        """The model's integrator: ``add(1)`` when a request enters, ``add(-1)`` when it leaves."""
        return self.concurrency.model(model)
