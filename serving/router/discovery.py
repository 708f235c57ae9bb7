"""Where the router learns its routes: the one interface its three sources implement.

- static: a routes file, reloaded when it changes (:mod:`.static_discovery`);
- Kubernetes: ModelDeployments, EndpointSlices and pods (:mod:`.kube_discovery`);
- pushed: whole tables handed over by code, as the local stack's supervisor does
  (:mod:`modelplane.local.discovery`).

A source hands the router complete route tables through ``apply`` whenever something changed; the
router swaps them in and releases requests waiting for a model that became ready. When a request
finds a model scaled to zero, the router asks the source to wake it (:meth:`Discovery.activate`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from modelplane.serving.router.routes import ModelRoute

ApplyRoutes = Callable[[dict[str, ModelRoute]], None]


class Discovery(Protocol):
    """A source of route tables, and the way to wake a model it knows."""

    async def start(self, apply: ApplyRoutes) -> None:
        """Start following the source, calling ``apply`` with every new table.

        Raises when the source cannot be used at all (a routes file that does not parse), so the
        router refuses to start instead of serving nothing.
        """
        ...

    async def stop(self) -> None:
        """Stop following the source (the last table stays in force)."""
        ...

    async def activate(self, model: str) -> None:
        """A request waits for ``model``, which has no ready endpoint: scale it up if it can be."""
        ...
