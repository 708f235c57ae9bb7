"""Readiness and drain: counts in-flight requests and refuses new ones once draining starts.

On SIGTERM the server stops being ready, answers new inference requests with 503, and waits here
until every request already accepted has been answered (or the drain timeout passes).
"""

from __future__ import annotations

import asyncio
import contextlib

from modelplane.serving.runtime.errors import unavailable


class Lifecycle:
    def __init__(self) -> None:
        self.draining = False
        self.inflight = 0
        self._idle: asyncio.Event | None = None

    def begin(self) -> None:
        """Admit one request, or raise 503 when draining."""
        if self.draining:
            raise unavailable("the server is shutting down; retry on another replica")
        self.inflight += 1

    def end(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self._idle is not None:
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Stop admitting requests and wait for in-flight ones; True if all finished in time."""
        self.draining = True
        if self.inflight == 0:
            return True
        self._idle = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self.inflight == 0
