"""Readiness and drain: counts in-flight requests and refuses new ones once draining starts.

On SIGTERM the server first *leaves*: it reports not ready (so Kubernetes takes it out of the
EndpointSlices and load balancers stop picking it) but keeps answering every request for the drain
delay, because clients and proxies learn of the change only after a propagation delay. Then it
*drains*: new inference requests get 503 with ``Retry-After`` and the server waits until every
request already accepted has been answered (or the drain timeout passes).
"""

from __future__ import annotations

import asyncio
import contextlib

from modelplane.serving.runtime.errors import unavailable


class Lifecycle:
    def __init__(self) -> None:
        self.leaving = False  # not ready any more; still serving
        self.draining = False  # refusing new requests
        self.inflight = 0
        self._idle: asyncio.Event | None = None

    @property
    def accepting(self) -> bool:
        """Whether health checks should report this server ready for new traffic."""
        return not (self.leaving or self.draining)

    def begin(self) -> None:
        """Admit one request, or raise 503 when draining."""
        if self.draining:
            raise unavailable("the server is shutting down; retry on another replica")
        self.inflight += 1

    def end(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self._idle is not None:
            self._idle.set()

    def leave(self) -> None:
        """Report not ready from now on, while still answering requests."""
        self.leaving = True

    async def drain(self, timeout_s: float) -> bool:
        """Stop admitting requests and wait for in-flight ones; True if all finished in time."""
        self.leaving = True
        self.draining = True
        if self.inflight == 0:
            return True
        self._idle = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self.inflight == 0
