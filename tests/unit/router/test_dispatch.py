"""Dispatch around scale from zero: a held request goes to the endpoints that discovery found."""

from __future__ import annotations

import asyncio

from modelplane.serving.router.activation import ActivationQueue
from modelplane.serving.router.balancing import Backend, Endpoint
from modelplane.serving.router.dispatch import Dispatcher
from modelplane.serving.router.metrics import RouterMetrics
from modelplane.serving.router.routes import ModelRoute, RouteTable
from modelplane.serving.router.server import apply_routes


def cold_route() -> ModelRoute:
    return ModelRoute("ns/iris", [Backend("1", 100)], {}, scaled_to_zero=True, backend_model="iris")


def warm_route() -> ModelRoute:
    endpoint = Endpoint(key="10.0.0.1:8000", http="http://10.0.0.1:8000", grpc=None)
    return ModelRoute(
        "ns/iris", [Backend("1", 100)], {"1": [endpoint]}, scaled_to_zero=True, backend_model="iris"
    )


async def test_a_request_held_for_activation_is_sent_to_the_endpoints_that_appeared() -> None:
    table = RouteTable()
    activated: list[str] = []

    async def activate(model: str) -> None:
        activated.append(model)

    queue = ActivationQueue(activate, max_waiting=10, timeout_s=5)
    apply = apply_routes(table, queue)
    apply({"ns/iris": cold_route()})
    dispatcher = Dispatcher(table, queue, RouterMetrics())
    sent: list[tuple[str, str]] = []

    async def call(route: ModelRoute, endpoint: Endpoint, version: str) -> int:
        sent.append((endpoint.key, version))
        return 200

    request = asyncio.create_task(
        dispatcher.dispatch(
            "iris", "ns", None, None, call, unavailable=lambda r: False, failed=lambda r: False
        )
    )
    await asyncio.sleep(0.05)
    assert activated == ["ns/iris"]
    assert not request.done()
    apply({"ns/iris": warm_route()})  # discovery swaps in a new route object with the ready pod
    done = await asyncio.wait_for(request, timeout=2)
    assert done.result == 200
    assert sent == [("10.0.0.1:8000", "1")]
