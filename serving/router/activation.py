"""Holding requests for a model that is scaled to zero until it has a ready endpoint again.

Nothing is dropped silently: a request either gets endpoints to go to, or a clear refusal the
router turns into ``429`` (the queue is full) or ``503`` (the model did not become ready in time),
both with ``Retry-After``. The first request that finds a model cold asks for activation once;
the callback (the Kubernetes activator, or the local supervisor) scales it up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


class QueueFullError(Exception):
    """Too many requests are already waiting for this model."""


class ActivationTimeoutError(Exception):
    """The model did not get a ready endpoint within the timeout."""


@dataclass
class _ModelWaiters:
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0
    activating: bool = False


class ActivationQueue:
    """Bounded waiting rooms, one per model."""

    def __init__(
        self,
        activate: Callable[[str], Awaitable[None]],
        max_waiting: int = 100,
        timeout_s: float = 60.0,
    ) -> None:
        self._activate = activate
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self._models: dict[str, _ModelWaiters] = {}

    def waiting(self, model: str) -> int:
        entry = self._models.get(model)
        return entry.waiting if entry else 0

    def endpoints_ready(self, model: str) -> None:
        """Discovery saw ready endpoints for ``model``: release everyone waiting for it."""
        entry = self._models.get(model)
        if entry is not None:
            entry.ready.set()
            entry.activating = False

    def endpoints_gone(self, model: str) -> None:
        """The model has no ready endpoint any more: later requests must wait again."""
        entry = self._models.get(model)
        if entry is not None and entry.ready.is_set():  # an unset event may have waiters: keep it
            entry.ready = asyncio.Event()

    async def wait(self, model: str) -> None:
        """Wait until ``model`` has ready endpoints; raises when full or timed out."""
        entry = self._models.setdefault(model, _ModelWaiters())
        if entry.ready.is_set():
            return
        if entry.waiting >= self.max_waiting:
            raise QueueFullError(f"{entry.waiting} requests already wait for model {model!r} to start")
        entry.waiting += 1
        try:
            if not entry.activating:
                entry.activating = True
                await self._activate(model)
            try:
                await asyncio.wait_for(entry.ready.wait(), timeout=self.timeout_s)
            except TimeoutError:
                entry.activating = False  # ask again on the next request
                raise ActivationTimeoutError(
                    f"model {model!r} did not become ready within {self.timeout_s:g}s"
                ) from None
        finally:
            entry.waiting -= 1
