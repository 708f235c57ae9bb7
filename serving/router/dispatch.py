"""Protocol-independent request dispatch, shared by the HTTP and gRPC front ends.

Given the model a request is for, :meth:`Dispatcher.dispatch` finds its route, waits for
activation when the model is scaled to zero, picks the version and an endpoint, calls the
front end's ``call`` on it, and retries on another endpoint when the call fails to connect or
the answer says "unavailable", within the retry budget. Failures come back as
:class:`RequestError` with an HTTP-style status that each front end maps to its own codes.

Every request is counted while it waits for activation (queued) and while a call to an endpoint
is in flight, both in the point-in-time gauges and in the model's concurrency integrator (whose
time average is the autoscaler's signal).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from mypy_extensions import mypyc_attr

from modelplane.serving.router.activation import ActivationQueue, ActivationTimeoutError, QueueFullError
from modelplane.serving.router.balancing import (
    EjectionPolicy,
    Endpoint,
    RetryBudget,
    pick_backend,
    pick_endpoint,
    record_result,
)
from modelplane.serving.router.metrics import RouterMetrics
from modelplane.serving.router.paths import route_keys
from modelplane.serving.router.routes import ModelRoute, RouteTable

T = TypeVar("T")


class RequestError(Exception):
    """A request the router answers itself: an HTTP-style status and a message."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class BackendUnavailableError(Exception):
    """Raised by a front end's ``call`` when the endpoint could not be reached (retry elsewhere)."""


@dataclass(frozen=True)
class DispatchSettings:
    default_namespace: str = "default"
    max_attempts: int = 3
    retry_after_s: int = 5


@mypyc_attr(native_class=False)  # compiled builds: mypyc's generic dataclasses fail at import
@dataclass
class Dispatched(Generic[T]):
    result: T
    route: ModelRoute
    version: str


class Dispatcher:
    """Routing state shared by the front ends: the table, the activation queue, budgets, metrics."""

    def __init__(
        self,
        table: RouteTable,
        activation: ActivationQueue,
        metrics: RouterMetrics,
        settings: DispatchSettings | None = None,
        ejection: EjectionPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.table = table
        self.activation = activation
        self.metrics = metrics
        self.settings = settings or DispatchSettings()
        self.ejection = ejection or EjectionPolicy()
        self.rng = rng or random.Random()
        self.budget = RetryBudget()

    def lookup(self, model: str, namespace: str | None) -> ModelRoute:
        for key in route_keys(model, namespace, self.settings.default_namespace):
            route = self.table.get(key)
            if route is not None:
                return route
        raise RequestError(404, f"unknown model {model!r}")

    async def dispatch(
        self,
        model: str,
        namespace: str | None,
        version: str | None,
        sticky: str | None,
        call: Callable[[ModelRoute, Endpoint, str], Awaitable[T]],
        unavailable: Callable[[T], bool],
        failed: Callable[[T], bool],
    ) -> Dispatched[T]:
        """Route one request: retry elsewhere when `unavailable(result)`; `failed` counts toward ejection."""
        route = self.lookup(model, namespace)
        if not route.ready():
            if not route.scaled_to_zero:
                raise RequestError(503, f"model {model!r} has no ready endpoint", self.settings.retry_after_s)
            await self._await_activation(route)
            route = self.lookup(model, namespace)  # the table was swapped: take the route with endpoints
        chosen = version if version is not None else self._choose_version(route, sticky)
        endpoints = route.endpoints.get(chosen, [])
        if not endpoints:
            raise RequestError(404, f"model {model!r} has no version {chosen!r}")
        self.budget.deposit()
        return await self._attempts(model, route, chosen, call, unavailable, failed, set(), "no endpoint")

    async def retry_elsewhere(
        self,
        model: str,
        route: ModelRoute,
        version: str,
        tried: set[str],
        last_error: str,
        call: Callable[[ModelRoute, Endpoint, str], Awaitable[T]],
        unavailable: Callable[[T], bool],
        failed: Callable[[T], bool],
    ) -> Dispatched[T]:
        """Go on with a request whose first attempt (made elsewhere, on ``tried``) failed to connect
        or was answered "unavailable": the same retries, budget and errors as :meth:`dispatch`."""
        return await self._attempts(model, route, version, call, unavailable, failed, tried, last_error)

    async def _attempts(
        self,
        model: str,
        route: ModelRoute,
        chosen: str,
        call: Callable[[ModelRoute, Endpoint, str], Awaitable[T]],
        unavailable: Callable[[T], bool],
        failed: Callable[[T], bool],
        tried: set[str],
        last_error: str,
    ) -> Dispatched[T]:
        endpoints = route.endpoints.get(chosen, [])
        for attempt in range(len(tried), self.settings.max_attempts):
            now = time.monotonic()
            endpoint = pick_endpoint(endpoints, self.rng, now, tried)
            if endpoint is None:
                break
            if attempt > 0:
                if not self.budget.try_withdraw(now):
                    break
                self.metrics.retries.labels(model=route.name).inc()
            tried.add(endpoint.key)
            self.begin_attempt(route, endpoint)
            refused: str | None = None
            try:
                result = await call(route, endpoint, chosen)
            except BackendUnavailableError as exc:
                refused = f"{endpoint.key}: {exc}"
            except RequestError:  # the call gave up on this endpoint (a timeout): counts as a failure
                self.record(route, endpoint, False, endpoints)
                raise
            finally:
                self.end_attempt(route, endpoint)
            if refused is not None:
                last_error = refused
                self.record(route, endpoint, False, endpoints)
                continue
            self.record(route, endpoint, not failed(result), endpoints)
            if unavailable(result) and attempt + 1 < self.settings.max_attempts:
                last_error = f"{endpoint.key} is unavailable"
                continue
            return Dispatched(result, route, chosen)
        raise RequestError(
            502, f"model {model!r}: no endpoint answered ({last_error})", self.settings.retry_after_s
        )

    async def dispatch_picking(
        self,
        model: str,
        namespace: str | None,
        sticky: str | None,
        pick: Callable[[ModelRoute, list[Endpoint], float, set[str]], Endpoint | None],
        call: Callable[[ModelRoute, Endpoint, str], Awaitable[T]],
        unavailable: Callable[[T], bool],
        failed: Callable[[T], bool],
    ) -> Dispatched[T]:
        """:meth:`dispatch` for a front end that chooses endpoints itself (the OpenAI front end:
        least loaded, prefix affinity): the same lookup, activation, version split, retries, budget,
        ejection and counting, with ``pick(route, endpoints, now, tried)`` in place of two random
        choices. A separate method, so V2's requests keep their own path untouched."""
        route = self.lookup(model, namespace)
        if not route.ready():
            if not route.scaled_to_zero:
                raise RequestError(503, f"model {model!r} has no ready endpoint", self.settings.retry_after_s)
            await self._await_activation(route)
            route = self.lookup(model, namespace)
        chosen = self._choose_version(route, sticky)
        endpoints = route.endpoints.get(chosen, [])
        self.budget.deposit()
        tried: set[str] = set()
        last_error = "no endpoint"
        for attempt in range(self.settings.max_attempts):
            now = time.monotonic()
            endpoint = pick(route, endpoints, now, tried)
            if endpoint is None:
                break
            if attempt > 0:
                if not self.budget.try_withdraw(now):
                    break
                self.metrics.retries.labels(model=route.name).inc()
            tried.add(endpoint.key)
            self.begin_attempt(route, endpoint)
            refused: str | None = None
            try:
                result = await call(route, endpoint, chosen)
            except BackendUnavailableError as exc:
                refused = f"{endpoint.key}: {exc}"
            except RequestError:
                self.record(route, endpoint, False, endpoints)
                raise
            finally:
                self.end_attempt(route, endpoint)
            if refused is not None:
                last_error = refused
                self.record(route, endpoint, False, endpoints)
                continue
            self.record(route, endpoint, not failed(result), endpoints)
            if unavailable(result) and attempt + 1 < self.settings.max_attempts:
                last_error = f"{endpoint.key} is unavailable"
                continue
            return Dispatched(result, route, chosen)
        raise RequestError(
            502, f"model {model!r}: no endpoint answered ({last_error})", self.settings.retry_after_s
        )

    def begin_attempt(self, route: ModelRoute, endpoint: Endpoint) -> None:
        """A request is now in flight to ``endpoint``: count it (balancing, gauges, integrator)."""
        endpoint.outstanding += 1
        self.metrics.model_in_flight(route.name).inc()
        self.metrics.model_concurrency(route.name).add(1)

    def end_attempt(self, route: ModelRoute, endpoint: Endpoint) -> None:
        endpoint.outstanding -= 1
        self.metrics.model_in_flight(route.name).dec()
        self.metrics.model_concurrency(route.name).add(-1)

    def record(self, route: ModelRoute, endpoint: Endpoint, ok: bool, peers: list[Endpoint]) -> None:
        """An attempt's outcome, for passive outlier ejection (``peers``: the version's endpoints)."""
        if record_result(endpoint, ok, time.monotonic(), peers, self.ejection):
            self.metrics.ejections.labels(model=route.name).inc()

    async def _await_activation(self, route: ModelRoute) -> None:
        self.metrics.queued.labels(model=route.name).inc()
        load = self.metrics.model_concurrency(route.name)
        load.add(1)
        try:
            await self.activation.wait(route.name)
        except QueueFullError as exc:
            raise RequestError(429, str(exc), self.settings.retry_after_s) from None
        except ActivationTimeoutError as exc:
            raise RequestError(503, str(exc), self.settings.retry_after_s) from None
        finally:
            self.metrics.queued.labels(model=route.name).dec()
            load.add(-1)

    def pick_version(self, route: ModelRoute, sticky: str | None) -> str | None:
        """The version a request goes to (weighted, or by the sticky key); None if none takes traffic."""
        backends = route.backends
        if len(backends) == 1:  # no split (the common case): nothing to draw
            only = backends[0]
            return only.version if only.weight > 0 and route.endpoints.get(only.version) else None
        live = [b for b in backends if route.endpoints.get(b.version)]
        backend = pick_backend(live, self.rng, sticky)
        return backend.version if backend is not None else None

    def _choose_version(self, route: ModelRoute, sticky: str | None) -> str:
        version = self.pick_version(route, sticky)
        if version is None:
            raise RequestError(
                503, f"model {route.name!r} has no version taking traffic", self.settings.retry_after_s
            )
        return version
