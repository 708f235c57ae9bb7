"""Gathering concurrency for the autoscaler: the routers' in-flight and queued requests per model.

The routers see every request a model gets (including those held while it is scaled to zero),
so their gauges are the signal. Each router exposes Prometheus text; the operator scrapes them
all and sums per model. Scraping is I/O around a pure parser, so the sum is tested on text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("modelplane.autoscaler")

IN_FLIGHT = "modelplane_router_in_flight_requests"
QUEUED = "modelplane_router_queued_requests"


@dataclass(frozen=True)
class ModelLoad:
    """Requests for one model across all routers at one moment."""

    in_flight: float = 0.0
    queued: float = 0.0

    @property
    def concurrency(self) -> float:
        return self.in_flight + self.queued


def parse_router_metrics(texts: Iterable[str]) -> dict[str, ModelLoad]:
    """Sum in-flight and queued requests per model over several routers' /metrics pages."""
    in_flight: dict[str, float] = {}
    queued: dict[str, float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            target = {IN_FLIGHT: in_flight, QUEUED: queued}.get(family.name)
            if target is None:
                continue
            for sample in family.samples:
                model = sample.labels.get("model")
                if model:
                    target[model] = target.get(model, 0.0) + max(0.0, float(sample.value))
    return {
        model: ModelLoad(in_flight.get(model, 0.0), queued.get(model, 0.0))
        for model in set(in_flight) | set(queued)
    }


@dataclass
class LoadCache:
    """The latest per-model load, refreshed by :meth:`run`; ``fresh`` tells whether scrapes succeed."""

    urls: list[str]
    interval_s: float = 1.0
    loads: dict[str, ModelLoad] = field(default_factory=dict)
    updated: float = 0.0
    errors: int = 0

    def fresh(self, now: float, max_age_s: float = 10.0) -> bool:
        return now - self.updated <= max_age_s

    async def scrape_once(self, client: httpx.AsyncClient) -> None:
        results = await asyncio.gather(*(client.get(url) for url in self.urls), return_exceptions=True)
        texts = []
        for url, result in zip(self.urls, results, strict=True):
            if isinstance(result, BaseException) or result.status_code != 200:
                self.errors += 1
                log.warning("cannot scrape router metrics at %s: %s", url, result)
                continue
            texts.append(result.text)
        if texts or not self.urls:
            self.loads = parse_router_metrics(texts)
            self.updated = time.monotonic()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                await self.scrape_once(client)
                await asyncio.sleep(self.interval_s)
