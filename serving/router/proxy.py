"""The router's V2 HTTP front end: forwards each request to a chosen endpoint.

Per request: parse the target model from the path, pick a version (weighted split or a pinned
version), pick an endpoint (two choices, least outstanding), forward over a pooled keep-alive
connection, retry on another endpoint when the connection fails or the runtime answers 503 (within
the retry budget), and optionally copy the request to a shadow version afterwards. A model scaled
to zero holds the request in the activation queue instead of failing it.

The data path is lean on purpose (:mod:`.http_server` in front, :mod:`.upstream` behind, both raw
asyncio over ``httptools``): the router's budget is a fraction of a millisecond per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modelplane.serving.router.balancing import Backend, Endpoint, pick_endpoint
from modelplane.serving.router.dispatch import BackendUnavailableError, Dispatcher, RequestError
from modelplane.serving.router.http_server import Request, Response, error_response, json_response
from modelplane.serving.router.paths import NAMESPACE_HEADER, Target, parse_target
from modelplane.serving.router.routes import ModelRoute
from modelplane.serving.router.shadow import outputs_match
from modelplane.serving.router.upstream import (
    UpstreamConnectionError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamResponse,
)

STICKY_HEADER = b"x-modelplane-session"
_NAMESPACE_HEADER = NAMESPACE_HEADER.encode()
_HEALTH = frozenset({"/healthz", "/v2/health/live"})
_READY = frozenset({"/readyz", "/v2/health/ready"})
_INDEX = frozenset({"/v2/models", "/v2/repository/index"})


@dataclass(frozen=True)
class HttpSettings:
    """Limits and timeouts of the HTTP front end (from the command line)."""

    max_body_bytes: int = 64 * 1024 * 1024
    body_timeout_s: float = 30.0
    connect_timeout_s: float = 2.0
    request_timeout_s: float = 120.0


@dataclass
class Forwarded:
    response: UpstreamResponse
    seconds: float


def _unavailable(forwarded: Forwarded) -> bool:
    """The endpoint says it cannot take the request now: the dispatcher tries another."""
    return forwarded.response.status == 503


def _failed(forwarded: Forwarded) -> bool:
    """A server error: counts toward the endpoint's ejection."""
    return forwarded.response.status >= 500


class HttpFrontEnd:
    """Answers one parsed request (``handle``); ``close`` releases the backend connections."""

    def __init__(self, dispatcher: Dispatcher, settings: HttpSettings | None = None) -> None:
        self.dispatcher = dispatcher
        self.metrics = dispatcher.metrics
        self.settings = settings or HttpSettings()
        self.draining = False
        self.pool = UpstreamPool(self.settings.connect_timeout_s, self.settings.request_timeout_s)
        self._shadow_tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for task in list(self._shadow_tasks):
            task.cancel()
        await self.pool.close()

    async def handle(self, request: Request) -> Response:
        path = request.path
        if path in _HEALTH:
            return Response(200, b"", [(b"content-type", b"text/plain")])
        if path in _READY:
            return Response(503 if self.draining else 200, b"", [(b"content-type", b"text/plain")])
        if path == "/metrics":
            return Response(
                200, generate_latest(self.metrics.registry), [(b"content-type", CONTENT_TYPE_LATEST.encode())]
            )
        if path in _INDEX and request.method in ("GET", "POST"):
            return json_response(200, self._index())
        namespace_header = request.header(_NAMESPACE_HEADER)
        namespace = namespace_header.decode("latin-1") if namespace_header else None
        target = parse_target(path, namespace)
        if target is None:
            return error_response(404, f"no V2 model route for {path!r}; use /v2/models/NAME/...")
        sticky_value = request.header(STICKY_HEADER)
        sticky = sticky_value.decode("latin-1") if sticky_value is not None else None
        timeout_s = self.settings.request_timeout_s

        async def call(route: ModelRoute, endpoint: Endpoint, version: str) -> Forwarded:
            started = time.perf_counter()
            try:
                response = await self._forward(
                    endpoint, target.backend_path(version, route.backend_model), request
                )
            except UpstreamConnectionError as exc:  # refused, reset, connect timeout: try another
                raise BackendUnavailableError(str(exc)) from exc
            except UpstreamProtocolError as exc:  # it took the request and broke mid-answer: no retry
                raise RequestError(502, f"model {target.model!r}: {endpoint.key}: {exc}") from None
            except TimeoutError:  # the backend took the request but is slow: retrying would pile on
                raise RequestError(
                    504, f"model {target.model!r}: {endpoint.key} did not answer within {timeout_s:g}s"
                ) from None
            return Forwarded(response, time.perf_counter() - started)

        try:
            done = await self.dispatcher.dispatch(
                target.model, target.namespace, target.version, sticky, call, _unavailable, _failed
            )
        except RequestError as exc:
            self.metrics.request_count(target.model, "", str(exc.status)).inc()
            return error_response(exc.status, exc.message, exc.retry_after)
        forwarded, route = done.result, done.route
        answer = forwarded.response
        self.metrics.request_count(target.model, done.version, str(answer.status)).inc()
        self.metrics.request_latency(target.model).observe(forwarded.seconds)
        if route.shadow is not None and target.rest == "/infer" and answer.status == 200:
            self._maybe_shadow(route, target, request, forwarded)
        return Response(answer.status, answer.body, answer.headers)

    def _forward(self, endpoint: Endpoint, path: str, request: Request) -> Awaitable[UpstreamResponse]:
        if request.query:
            path += "?" + request.query.decode("latin-1")
        method = "GET" if request.method == "HEAD" else request.method  # the front end drops the body
        return self.pool.request(endpoint.authority, method, path, request.headers, request.body)

    # -- shadow traffic -----------------------------------------------------------------------------

    def _maybe_shadow(self, route: ModelRoute, target: Target, request: Request, primary: Forwarded) -> None:
        shadow = route.shadow
        assert shadow is not None
        if self.dispatcher.rng.randrange(100) >= shadow.weight:
            return
        task = asyncio.get_running_loop().create_task(self._shadow(route, shadow, target, request, primary))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(
        self, route: ModelRoute, shadow: Backend, target: Target, request: Request, primary: Forwarded
    ) -> None:
        endpoint = pick_endpoint(
            route.endpoints.get(shadow.version, []), self.dispatcher.rng, time.monotonic()
        )
        if endpoint is None:
            self.metrics.shadow.labels(model=route.name, result="error").inc()
            return
        started = time.perf_counter()
        try:
            theirs = await self._forward(
                endpoint, target.backend_path(shadow.version, route.backend_model), request
            )
        except (UpstreamConnectionError, UpstreamProtocolError, TimeoutError):
            self.metrics.shadow.labels(model=route.name, result="error").inc()
            return
        seconds = time.perf_counter() - started
        self.metrics.shadow_latency_delta.labels(model=route.name).observe(seconds - primary.seconds)
        ours = primary.response
        if theirs.status != 200:
            result = "error"
        else:
            result = (
                "match" if outputs_match(ours.body, ours.headers, theirs.body, theirs.headers) else "mismatch"
            )
        self.metrics.shadow.labels(model=route.name, result=result).inc()

    # -- listing ------------------------------------------------------------------------------------

    def _index(self) -> list[dict[str, Any]]:
        listing = []
        for key, route in sorted(self.dispatcher.table.routes.items()):
            listing.append(
                {
                    "name": route.name,
                    "key": key,
                    "versions": [b.version for b in route.backends],
                    "endpoints": {
                        version: [e.key for e in endpoints] for version, endpoints in route.endpoints.items()
                    },
                    "state": "READY"
                    if route.ready()
                    else ("SCALED_TO_ZERO" if route.scaled_to_zero else "UNAVAILABLE"),
                }
            )
        return listing
