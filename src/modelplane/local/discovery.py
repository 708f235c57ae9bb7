"""The local stack's route source: the supervisor pushes whole tables to the router.

On Kubernetes the router learns endpoints from EndpointSlices; on one machine the supervisor that
starts the runtime processes already knows them, so it hands complete route tables to
:meth:`PushedDiscovery.set_routes`, and is called back (``activate``) when a request finds a model
scaled to zero. It is the router's third :class:`~modelplane.serving.router.discovery.Discovery`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from modelplane.serving.router.discovery import ApplyRoutes
from modelplane.serving.router.routes import ModelRoute


class PushedDiscovery:
    """Routes set by code; the latest table is applied as soon as the router starts."""

    def __init__(self, activate: Callable[[str], Awaitable[None]]) -> None:
        self._activate = activate
        self._apply: ApplyRoutes | None = None
        self._routes: dict[str, ModelRoute] = {}

    async def start(self, apply: ApplyRoutes) -> None:
        self._apply = apply
        apply(self._routes)

    async def stop(self) -> None:
        self._apply = None

    def set_routes(self, routes: dict[str, ModelRoute]) -> None:
        """Replace the whole table; waiting requests for models that became ready are released."""
        self._routes = routes
        if self._apply is not None:
            self._apply(routes)

    async def activate(self, model: str) -> None:
        await self._activate(model)
