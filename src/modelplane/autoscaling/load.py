"""The load arithmetic of autoscaling: the routers' requests per model, averaged over time.

The routers see every request a model gets (including those held while it is scaled to zero),
so they are the signal. On Kubernetes each router exposes Prometheus text, which the operator
scrapes about once a second (:func:`parse_router_page`); the local stack's router hands over the
same figures as a typed :class:`~modelplane.api.metrics.LoadReport`. Either way the loads are
summed per model.

The figure used is the *time-averaged* concurrency since the previous scrape: each router keeps
``modelplane_router_concurrency_seconds_total{model}``, the integral over time of its in-flight
plus queued requests (request-seconds), and ``modelplane_router_uptime_seconds``, the clock that
integral is read at. Between two scrapes of one router, average concurrency = Δarea / Δt. A point
sample of the in-flight gauge would instead read whatever happened to be in flight at that instant:
with fast requests, 8 busy clients read anywhere from 0 to 8 and the autoscaler chases the noise.

The gauges ``modelplane_router_in_flight_requests`` and ``modelplane_router_queued_requests``
remain the fallback, per router, whenever no interval can be measured: on the first scrape, after
the router restarted (its uptime or a counter went back, or a model it reported vanished), and for
routers too old to expose the counter. The queued gauge also stays the activation signal: a
request waiting now must wake a scaled-to-zero model, whatever the average says.

Generative models add a second signal: their engines' queues. The router reads each generative
pod's ``vllm:num_requests_waiting`` and ``vllm:num_requests_running`` to balance on them, and
republishes their sums per model (``ROUTER_ENGINE_WAITING``, ``ROUTER_ENGINE_RUNNING``), so the
autoscaler learns how full the engines are without reaching every pod itself. Every router reads
every pod of a model, so across routers these are combined by their largest value, not summed.

Everything here is pure (:func:`parse_router_page`, :func:`router_loads`, :func:`sum_loads`), so
the arithmetic is tested on recorded text; the scraping itself is the operator's I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from modelplane.api.metrics import (
    ROUTER_CONCURRENCY_SECONDS,
    ROUTER_ENGINE_RUNNING,
    ROUTER_ENGINE_WAITING,
    ROUTER_IN_FLIGHT,
    ROUTER_QUEUED,
    ROUTER_UPTIME,
    LoadReport,
)


@dataclass(frozen=True)
class ModelLoad:
    """Requests for one model across all routers: point-in-time gauges and, where known, the average.

    ``average`` is the mean concurrency over the last scrape interval (``None`` when no router could
    give one); :attr:`concurrency` prefers it over the instantaneous ``in_flight + queued``.
    ``engine_waiting`` and ``engine_running`` are a generative model's engine queues over its pods
    (``None`` for models whose pods' load no router reads).
    """

    in_flight: float = 0.0
    queued: float = 0.0
    average: float | None = None
    engine_waiting: float | None = None
    engine_running: float | None = None

    @property
    def concurrency(self) -> float:
        return self.average if self.average is not None else self.in_flight + self.queued


def parse_router_page(text: str) -> LoadReport:
    """Read the autoscaler's metrics from one router's Prometheus text."""
    in_flight: dict[str, float] = {}
    queued: dict[str, float] = {}
    areas: dict[str, float] | None = None
    uptime: float | None = None
    engine_waiting: dict[str, float] = {}
    engine_running: dict[str, float] = {}
    targets = {
        ROUTER_IN_FLIGHT: in_flight,
        ROUTER_QUEUED: queued,
        ROUTER_ENGINE_WAITING: engine_waiting,
        ROUTER_ENGINE_RUNNING: engine_running,
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # Match samples, not families: the parser names a counter's family without ``_total``.
            if sample.name == ROUTER_UPTIME:
                uptime = float(sample.value)
                continue
            if sample.name == ROUTER_CONCURRENCY_SECONDS:
                areas = {} if areas is None else areas
                target = areas
            elif sample.name in targets:
                target = targets[sample.name]
            else:
                continue
            model = sample.labels.get("model")
            if model:
                target[model] = target.get(model, 0.0) + max(0.0, float(sample.value))
    if areas is None and uptime is not None:
        areas = {}  # a router that has seen no request yet exposes the clock but no model
    return LoadReport(in_flight, queued, areas, uptime, engine_waiting, engine_running)


@dataclass(frozen=True)
class Scrape:
    """One router's load report and the scraper's clock on arrival (used when the router has no uptime)."""

    report: LoadReport
    time: float


def _interval(previous: Scrape, current: Scrape) -> float | None:
    """Seconds between two scrapes of one router, on its own clock where it has one; None if it restarted."""
    if previous.report.uptime is not None and current.report.uptime is not None:
        elapsed = current.report.uptime - previous.report.uptime
    else:
        elapsed = current.time - previous.time
    return elapsed if elapsed > 0 else None


def router_loads(previous: Scrape | None, current: Scrape) -> dict[str, ModelLoad]:
    """Per-model load from one router: the average since ``previous`` where measurable, else the gauges."""
    report = current.report
    averages = _averages(previous, current)
    models = (
        set(report.in_flight)
        | set(report.queued)
        | set(averages or {})
        | set(report.engine_waiting)
        | set(report.engine_running)
    )
    return {
        model: ModelLoad(
            report.in_flight.get(model, 0.0),
            report.queued.get(model, 0.0),
            None if averages is None else averages.get(model, 0.0),
            report.engine_waiting.get(model),
            report.engine_running.get(model),
        )
        for model in models
    }


def _averages(previous: Scrape | None, current: Scrape) -> dict[str, float] | None:
    """Δarea / Δt per model between two scrapes of one router; None when that cannot be measured."""
    if previous is None or previous.report.areas is None or current.report.areas is None:
        return None
    interval = _interval(previous, current)
    before, now = previous.report.areas, current.report.areas
    # A counter that went back, or a model that vanished, means the router restarted.
    if interval is None or any(model not in now or now[model] < area for model, area in before.items()):
        return None
    # A model new since the last scrape started from zero within this interval.
    return {model: (area - before.get(model, 0.0)) / interval for model, area in now.items()}


def _largest(a: float | None, b: float | None) -> float | None:
    """The larger of two readings of the same engines, either possibly absent."""
    if a is None or b is None:
        return a if b is None else b
    return max(a, b)


def sum_loads(per_router: Iterable[dict[str, ModelLoad]]) -> dict[str, ModelLoad]:
    """Sum over routers: gauges add up, and so do the routers' averages (each request is in one router).

    The engines' queues are not summed: each router reads the same pods, so the largest (freshest
    busy) reading stands for all.
    """
    total: dict[str, ModelLoad] = {}
    for loads in per_router:
        for model, load in loads.items():
            seen = total.get(model)
            if seen is None:
                total[model] = load
                continue
            # A router without an average contributes its gauges to the sum of averages.
            average = (
                None if seen.average is None and load.average is None else seen.concurrency + load.concurrency
            )
            total[model] = ModelLoad(
                seen.in_flight + load.in_flight,
                seen.queued + load.queued,
                average,
                _largest(seen.engine_waiting, load.engine_waiting),
                _largest(seen.engine_running, load.engine_running),
            )
    return total


def parse_router_metrics(texts: Iterable[str]) -> dict[str, ModelLoad]:
    """Point-in-time in-flight and queued requests per model over several routers' /metrics pages."""
    return sum_loads(router_loads(None, Scrape(parse_router_page(text), 0.0)) for text in texts)


@dataclass
class ConcurrencyAverager:
    """Remembers each router's previous scrape, so each new one yields the average since then."""

    previous: dict[str, Scrape] = field(default_factory=dict)

    def update(self, pages: dict[str, Scrape]) -> dict[str, ModelLoad]:
        """The summed load for this round of scrapes (routers not scraped this round are skipped)."""
        loads = [router_loads(self.previous.get(url), scrape) for url, scrape in pages.items()]
        self.previous.update(pages)
        return sum_loads(loads)
