"""The router's time-integrated concurrency: request-seconds per model, flushed up to each scrape."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest

from modelplane.autoscaling.load import parse_router_page
from modelplane.serving.router.activation import ActivationQueue
from modelplane.serving.router.balancing import Backend, Endpoint
from modelplane.serving.router.dispatch import BackendUnavailableError, Dispatcher
from modelplane.serving.router.metrics import ConcurrencyIntegrator, RouterMetrics
from modelplane.serving.router.routes import ModelRoute, RouteTable
from modelplane.serving.router.server import apply_routes


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_area_is_the_integral_of_the_level_over_a_known_sequence_of_changes() -> None:
    clock = Clock(100.0)
    integrator = ConcurrencyIntegrator(clock)
    # level 1 for 2 s, 3 for 0.5 s, 2 for 1 s, 0 for 4 s, then 1 ongoing.
    for at, delta in [(100.0, 1), (102.0, 2), (102.5, -1), (103.5, -2), (107.5, 1)]:
        clock.now = at
        integrator.add(delta)
    assert integrator.area_at(107.5) == pytest.approx(2.0 + 1.5 + 2.0)
    # An unchanged but busy model keeps accumulating up to the moment it is read.
    assert integrator.area_at(110.0) == pytest.approx(5.5 + 2.5)
    assert integrator.level == 1


def test_a_scrape_reports_the_area_up_to_now_and_the_router_clock() -> None:
    clock = Clock(50.0)
    metrics = RouterMetrics(clock=clock)
    load = metrics.model_concurrency("ns/iris")
    clock.now = 51.0
    load.add(1)
    load.add(1)
    clock.now = 54.0  # two requests held for 3 s, still in flight at the scrape
    page = parse_router_page(generate_latest(metrics.registry).decode())
    assert page.areas == pytest.approx({"ns/iris": 6.0})
    assert page.uptime == pytest.approx(4.0)
    assert metrics.model_concurrency("ns/iris") is load  # one integrator per model


def test_a_router_without_requests_exposes_its_clock_and_no_model() -> None:
    page = parse_router_page(generate_latest(RouterMetrics(clock=Clock(7.0)).registry).decode())
    assert page.areas == {}
    assert page.uptime == 0.0


def _route(endpoints: list[Endpoint]) -> ModelRoute:
    by_version = {"1": endpoints} if endpoints else {}
    return ModelRoute("ns/iris", [Backend("1", 100)], by_version, scaled_to_zero=True, backend_model="iris")


def _endpoint(n: int) -> Endpoint:
    return Endpoint(key=f"10.0.0.{n}:8000", http=f"http://10.0.0.{n}:8000", grpc=None)


async def test_dispatch_counts_queued_and_in_flight_time_and_a_retry_is_not_counted_twice() -> None:
    clock = Clock(0.0)
    metrics = RouterMetrics(clock=clock)
    table = RouteTable()
    activated = asyncio.Event()

    async def activate(model: str) -> None:
        activated.set()

    queue = ActivationQueue(activate, max_waiting=10, timeout_s=5)
    apply = apply_routes(table, queue)
    apply({"ns/iris": _route([])})
    dispatcher = Dispatcher(table, queue, metrics)
    release = asyncio.Event()
    tried: list[str] = []

    async def call(route: ModelRoute, endpoint: Endpoint, version: str) -> int:
        tried.append(endpoint.key)
        if len(tried) == 1:
            raise BackendUnavailableError("refused")  # retried at once on the other endpoint
        await release.wait()
        return 200

    request = asyncio.create_task(
        dispatcher.dispatch(
            "iris", "ns", None, None, call, unavailable=lambda r: False, failed=lambda r: False
        )
    )
    await asyncio.wait_for(activated.wait(), timeout=2)
    clock.now = 3.0  # held 3 s while the model scales up from zero
    apply({"ns/iris": _route([_endpoint(1), _endpoint(2)])})
    await asyncio.sleep(0.05)
    assert not request.done()
    clock.now = 5.0  # then 2 s in flight
    release.set()
    done = await asyncio.wait_for(request, timeout=2)
    assert done.result == 200
    assert len(set(tried)) == 2
    clock.now = 9.0  # idle afterwards: no more area
    load = metrics.model_concurrency("ns/iris")
    assert load.level == 0
    assert load.area_at(clock.now) == pytest.approx(5.0)


def test_the_typed_load_report_says_what_a_scrape_of_the_page_parses_to() -> None:
    # The local stack reads the report typed, the operator parses the page: both must agree.
    clock = Clock(10.0)
    metrics = RouterMetrics(clock=clock)
    busy = metrics.model_concurrency("ns/iris")
    busy.add(1)
    metrics.model_in_flight("ns/iris").inc()
    metrics.model_in_flight("ns/idle").inc()
    metrics.model_in_flight("ns/idle").dec()
    metrics.queued.labels(model="ns/asleep").inc(2)
    metrics.model_concurrency("ns/asleep").add(2)
    clock.now = 12.5
    report = metrics.load_report()
    assert report == parse_router_page(generate_latest(metrics.registry).decode())
    assert report.areas == pytest.approx({"ns/iris": 2.5, "ns/asleep": 5.0})
    assert report.in_flight == {"ns/iris": 1.0, "ns/idle": 0.0}
    assert report.queued == {"ns/asleep": 2.0}
    assert report.uptime == pytest.approx(2.5)
