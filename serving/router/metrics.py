"""Prometheus metrics of the router, per model (and version where it matters)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class RouterMetrics:
    """All router metrics in one registry (one per router instance, so tests can run several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
            "Requests in flight, by model (the autoscaler's signal)",
            ["model"],
            registry=r,
        )
        self.queued = Gauge(
            "modelplane_router_queued_requests",
            "Requests waiting for a scaled-to-zero model",
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
