"""Prometheus metrics of the runtime; ``modelplane_runtime_inflight_requests`` drives the autoscaler.

One registry per server (not the process-global default), so several servers in one process, as
in tests, do not collide. Label children are cached: the hot path does no label lookups.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modelplane.api.metrics import RUNTIME_IN_FLIGHT

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _GpuMemoryCollector(Collector):
    """GPU memory allocated and reserved by torch, per visible device; nothing without CUDA."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if not torch.cuda.is_available():
            return
        family = GaugeMetricFamily(
            "modelplane_runtime_gpu_memory_bytes", "GPU memory held by torch", labels=["device", "kind"]
        )
        for index in range(torch.cuda.device_count()):
            family.add_metric([str(index), "allocated"], float(torch.cuda.memory_allocated(index)))
            family.add_metric([str(index), "reserved"], float(torch.cuda.memory_reserved(index)))
        yield family


class RuntimeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "modelplane_runtime_requests",
            "Inference requests by model, protocol and result code",
            ["model", "protocol", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelplane_runtime_request_duration_seconds",
            "Inference request latency, body received to response ready",
            ["model", "protocol"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue = Histogram(
            "modelplane_runtime_queue_duration_seconds",
            "Time a request waited in its model's batch queue",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "modelplane_runtime_batch_size",
            "Samples per forward pass",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            RUNTIME_IN_FLIGHT,
            "Inference requests received and not yet answered",
            ["model"],
            registry=self.registry,
        )
        self.registry.register(_GpuMemoryCollector())
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request_started(self, model: str) -> None:
        self._child(self.inflight, model).inc()

    def request_finished(self, model: str, protocol: str, code: str, seconds: float) -> None:
        self._child(self.inflight, model).dec()
        self._child(self.requests, model, protocol, code).inc()
        self._child(self.latency, model, protocol).observe(seconds)

    def request_refused(self, model: str, protocol: str, code: str) -> None:
        self._child(self.requests, model, protocol, code).inc()

    def observe_queue(self, model: str, seconds: float) -> None:
        self._child(self.queue, model).observe(seconds)

    def observe_batch(self, model: str, size: int) -> None:
        self._child(self.batch_size, model).observe(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
