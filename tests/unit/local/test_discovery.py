"""The local stack's pushed discovery: the supervisor's tables reach the router, wake-ups reach it back."""

from __future__ import annotations

from modelplane.local.discovery import PushedDiscovery
from modelplane.serving.router.balancing import Backend
from modelplane.serving.router.routes import ModelRoute


def _route(name: str) -> ModelRoute:
    return ModelRoute(name, [Backend("1", 100)], {}, scaled_to_zero=True, backend_model=name)


async def test_a_table_pushed_before_the_router_starts_is_applied_when_it_starts() -> None:
    woken: list[str] = []

    async def wake(model: str) -> None:
        woken.append(model)

    discovery = PushedDiscovery(wake)
    applied: list[dict[str, ModelRoute]] = []
    discovery.set_routes({"demo": _route("demo")})  # the supervisor's first step ran first
    await discovery.start(applied.append)
    assert list(applied[-1]) == ["demo"]
    discovery.set_routes({})
    assert applied[-1] == {}
    await discovery.activate("demo")
    assert woken == ["demo"]
    await discovery.stop()
    discovery.set_routes({"late": _route("late")})  # after stop: the router no longer listens
    assert applied[-1] == {}
