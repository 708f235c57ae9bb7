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
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modelplane import __version__
from modelplane.serving.router.balancing import Backend, Endpoint, pick_endpoint
from modelplane.serving.router.dispatch import BackendUnavailableError, Dispatcher, RequestError
from modelplane.serving.router.extensions import (
    ALL_MODELS_STATISTICS_REFUSED,
    ROUTER_EXTENSIONS,
    infer_shared_memory_refusal,
    local_refusal,
)
from modelplane.serving.router.http_server import (
    Request,
    Response,
    error_response,
    internal_error,
    json_response,
)
from modelplane.serving.router.paths import NAMESPACE_HEADER, Target, parse_target
from modelplane.serving.router.routes import ModelRoute
from modelplane.serving.router.shadow import outputs_match
from modelplane.serving.router.statistics_fanout import StatisticsFanOut
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
_SERVER_METADATA = frozenset({"/v2", "/v2/"})
# What every JSON request naming a shared-memory region contains, looked for before any parse: the
# key, which has a "g" (a byte rare in inference JSON: not in V2's field names nor in numbers), or
# a backslash (a key may be spelled with \u escapes). `int in bytes` is a memchr with no argument
# parsing: about a tenth of what `bytes.find` costs on a small body.
_SHARED_MEMORY_KEY = b"shared_memory_region"
_KEY_ANCHOR = ord("g")
_KEY_ANCHOR_BYTES = b"g"
_ANCHOR_AT = _SHARED_MEMORY_KEY.index(_KEY_ANCHOR_BYTES)
_BACKSLASH = ord("\\")
_OPEN_BRACE = ord("{")
_HEADER_LENGTH = b"inference-header-content-length"
_CONTENT_ENCODING = b"content-encoding"


@dataclass(frozen=True)
class HttpSettings:
    """Limits and timeouts of the HTTP front end (from the command line)."""

    max_body_bytes: int = 64 * 1024 * 1024
    body_timeout_s: float = 30.0
    connect_timeout_s: float = 2.0
    request_timeout_s: float = 120.0


class Forwarded:
    # Made per request: a plain class, not a dataclass (see setup.py).
    __slots__ = ("response", "seconds")

    def __init__(self, response: UpstreamResponse, seconds: float) -> None:
        self.response = response
        self.seconds = seconds


def _unavailable(forwarded: Forwarded) -> bool:
    """The endpoint says it cannot take the request now: the dispatcher tries another."""
    return forwarded.response.status == 503


def _failed(forwarded: Forwarded) -> bool:
    """A server error: counts toward the endpoint's ejection."""
    return forwarded.response.status >= 500


def may_name_shared_memory(request: Request) -> bool:
    """Whether an inference request might name a shared-memory region: cheap, for every request.

    False for almost every request, after a memchr or two over its body; True whenever
    :func:`.extensions.infer_shared_memory_refusal` may refuse it, which then parses the request's
    JSON to be sure. A body that does not start as JSON does (compressed, say) is always True.
    """
    body = request.body
    if not body or body[0] != _OPEN_BRACE:
        return True
    if _KEY_ANCHOR not in body and _BACKSLASH not in body:
        return False  # a JSON body, or a binary one whose tensors happen to have neither byte
    head = body  # the JSON part: a binary-tensor body's first Inference-Header-Content-Length bytes
    for name, value in request.headers:
        if name == _HEADER_LENGTH:
            try:
                length = int(value.decode("latin-1"))
            except ValueError:
                return True  # the runtime refuses it; no need to be quick
            if length < 0:
                return True
            if length < len(body):
                head = body[:length]
        elif name == _CONTENT_ENCODING and value != b"identity":
            return True
    if _KEY_ANCHOR in head:
        at = head.find(_KEY_ANCHOR_BYTES, _ANCHOR_AT)
        while at >= 0:
            if head.startswith(_SHARED_MEMORY_KEY, at - _ANCHOR_AT):
                return True
            at = head.find(_KEY_ANCHOR_BYTES, at + 1)
    return _BACKSLASH in head


def _sticky(request: Request) -> str | None:
    value = request.header(STICKY_HEADER)
    return value.decode("latin-1") if value is not None else None


# Answers a request that is not V2 (the OpenAI front end), or None to leave it to V2's 404.
Fallback = Callable[[Request], Awaitable[Response | None]]


class HttpFrontEnd:
    """Answers one parsed request (``handle``); ``close`` releases the backend connections.

    Requests whose path is not a V2 one go to ``fallback`` (the OpenAI front end, ``/v1``), after
    every V2 check: a V2 request never pays for it.
    """

    def __init__(
        self, dispatcher: Dispatcher, settings: HttpSettings | None = None, fallback: Fallback | None = None
    ) -> None:
        self.dispatcher = dispatcher
        self.fallback = fallback
        self.metrics = dispatcher.metrics
        self.settings = settings or HttpSettings()
        self.draining = False
        self.pool = UpstreamPool(self.settings.connect_timeout_s, self.settings.request_timeout_s)
        self.statistics = StatisticsFanOut(dispatcher, self.pool)
        self._tasks: set[asyncio.Task[None]] = set()  # retries and shadow copies

    async def close(self) -> None:
        for task in list(self._tasks):
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
        target = self._target(request)
        if target is None:
            if path in _SERVER_METADATA and request.method in ("GET", "HEAD"):
                return json_response(
                    200,
                    {"name": "modelplane-router", "version": __version__, "extensions": ROUTER_EXTENSIONS},
                )
            refusal = local_refusal(path)
            if refusal is not None:
                return error_response(400, refusal)
            fallback = self.fallback
            if fallback is not None:
                answer = await fallback(request)
                if answer is not None:
                    return answer
            return error_response(404, f"no V2 model route for {path!r}; use /v2/models/NAME/...")
        if request.method in ("GET", "HEAD"):
            if target.rest == "/stats":
                return await self._statistics(target)
            if target.model == "stats" and not target.rest and target.version is None:
                return error_response(400, ALL_MODELS_STATISTICS_REFUSED)
        elif target.rest == "/infer" and may_name_shared_memory(request):
            refusal = infer_shared_memory_refusal(request.body, request.headers, self.settings.max_body_bytes)
            if refusal is not None:
                return self._refused(target, RequestError(400, refusal))
        try:
            done = await self.dispatcher.dispatch(
                target.model,
                target.namespace,
                target.version,
                _sticky(request),
                self._caller(target, request),
                _unavailable,
                _failed,
            )
        except RequestError as exc:
            return self._refused(target, exc)
        return self._answered(target, request, done.route, done.version, done.result)

    def forward_fast(self, request: Request, respond: Callable[[Response], None]) -> bool:
        """Forward an inference from the protocol callbacks, without a task: the common case.

        Takes a POST for a ready model when an idle pooled connection to the chosen endpoint is at
        hand, sends it, and answers through ``respond`` from the backend connection's callback: two
        event-loop turns per request instead of four, and no coroutines. Anything else (another
        method, a model scaled to zero, no idle connection, a health check) returns False for
        :meth:`handle`. A first attempt that fails to connect or is answered 503 goes on in
        :meth:`Dispatcher.retry_elsewhere`, with the same retries, budget and errors.
        """
        if request.method != "POST":
            return False
        target = self._target(request)
        if target is None or may_name_shared_memory(request):  # :meth:`handle` looks closer
            return False
        dispatcher = self.dispatcher
        try:
            route = dispatcher.lookup(target.model, target.namespace)
        except RequestError:
            return False
        if target.version is None:
            version = dispatcher.pick_version(route, _sticky(request))  # None when the route is not ready
        elif route.ready():
            version = target.version
        else:
            return False
        endpoints = route.endpoints.get(version) if version is not None else None
        if version is None or not endpoints:
            return False
        endpoint = pick_endpoint(endpoints, dispatcher.rng, time.monotonic())
        if endpoint is None:
            return False
        started = time.perf_counter()

        def done(response: UpstreamResponse | None, error: BaseException | None) -> None:
            dispatcher.end_attempt(route, endpoint)
            if response is not None and (response.status != 503 or dispatcher.settings.max_attempts <= 1):
                dispatcher.record(route, endpoint, response.status < 500, endpoints)
                forwarded = Forwarded(response, time.perf_counter() - started)
                respond(self._answered(target, request, route, version, forwarded))
                return
            dispatcher.record(route, endpoint, False, endpoints)
            if response is not None or isinstance(error, UpstreamConnectionError):
                last_error = (
                    f"{endpoint.key} is unavailable" if response is not None else f"{endpoint.key}: {error}"
                )
                self._track(self._retry(target, request, route, version, {endpoint.key}, last_error, respond))
            elif isinstance(error, TimeoutError):
                respond(self._refused(target, self._timed_out(target, endpoint)))
            else:  # it took the request and broke mid-answer: no retry
                respond(self._refused(target, self._broke(target, endpoint, error)))

        path = self._backend_path(target, route, version, request)
        if not self.pool.send_pooled(endpoint.authority, "POST", path, request.headers, request.body, done):
            return False
        dispatcher.budget.deposit()
        dispatcher.begin_attempt(route, endpoint)
        return True

    async def _retry(
        self,
        target: Target,
        request: Request,
        route: ModelRoute,
        version: str,
        tried: set[str],
        last_error: str,
        respond: Callable[[Response], None],
    ) -> None:
        try:
            done = await self.dispatcher.retry_elsewhere(
                target.model,
                route,
                version,
                tried,
                last_error,
                self._caller(target, request),
                _unavailable,
                _failed,
            )
        except RequestError as exc:
            respond(self._refused(target, exc))
        except Exception:
            respond(internal_error(request))
        else:
            respond(self._answered(target, request, done.route, done.version, done.result))

    async def _statistics(self, target: Target) -> Response:
        """A model's statistics, summed over its pods (see :mod:`.statistics_fanout`)."""
        try:
            document = await self.statistics.collect(target.model, target.namespace, target.version)
        except RequestError as exc:
            return self._refused(target, exc)
        self.metrics.request_count(target.model, target.version or "", "200").inc()
        return json_response(200, document)

    # -- request handling ---------------------------------------------------------------------------

    @staticmethod
    def _target(request: Request) -> Target | None:
        namespace_header = request.header(_NAMESPACE_HEADER)
        namespace = namespace_header.decode("latin-1") if namespace_header else None
        return parse_target(request.path, namespace)

    def _caller(
        self, target: Target, request: Request
    ) -> Callable[[ModelRoute, Endpoint, str], Awaitable[Forwarded]]:
        """The dispatcher's ``call``: forward to one endpoint, mapping failures to retry or not."""

        async def call(route: ModelRoute, endpoint: Endpoint, version: str) -> Forwarded:
            started = time.perf_counter()
            try:
                response = await self._forward(
                    endpoint, self._backend_path(target, route, version, request), request
                )
            except UpstreamConnectionError as exc:  # refused, reset, connect timeout: try another
                raise BackendUnavailableError(str(exc)) from exc
            except UpstreamProtocolError as exc:  # it took the request and broke mid-answer: no retry
                raise self._broke(target, endpoint, exc) from None
            except TimeoutError:  # the backend took the request but is slow: retrying would pile on
                raise self._timed_out(target, endpoint) from None
            return Forwarded(response, time.perf_counter() - started)

        return call

    @staticmethod
    def _broke(target: Target, endpoint: Endpoint, error: BaseException | None) -> RequestError:
        return RequestError(502, f"model {target.model!r}: {endpoint.key}: {error}")

    def _timed_out(self, target: Target, endpoint: Endpoint) -> RequestError:
        limit = self.settings.request_timeout_s
        return RequestError(504, f"model {target.model!r}: {endpoint.key} did not answer within {limit:g}s")

    def _refused(self, target: Target, exc: RequestError) -> Response:
        self.metrics.request_count(target.model, "", str(exc.status)).inc()
        return error_response(exc.status, exc.message, exc.retry_after)

    def _answered(
        self, target: Target, request: Request, route: ModelRoute, version: str, forwarded: Forwarded
    ) -> Response:
        answer = forwarded.response
        self.metrics.request_count(target.model, version, str(answer.status)).inc()
        self.metrics.request_latency(target.model).observe(forwarded.seconds)
        if route.shadow is not None and target.rest == "/infer" and answer.status == 200:
            self._maybe_shadow(route, target, request, forwarded)
        return Response(answer.status, answer.body, answer.headers)

    @staticmethod
    def _backend_path(target: Target, route: ModelRoute, version: str, request: Request) -> str:
        path = target.backend_path(version, route.backend_model)
        return path + "?" + request.query.decode("latin-1") if request.query else path

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        """Run background work (retries, shadow copies), kept referenced until it finishes."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forward(self, endpoint: Endpoint, path: str, request: Request) -> Awaitable[UpstreamResponse]:
        method = "GET" if request.method == "HEAD" else request.method  # the front end drops the body
        return self.pool.request(endpoint.authority, method, path, request.headers, request.body)

    # -- shadow traffic -----------------------------------------------------------------------------

    def _maybe_shadow(self, route: ModelRoute, target: Target, request: Request, primary: Forwarded) -> None:
        shadow = route.shadow
        assert shadow is not None
        if self.dispatcher.rng.randrange(100) >= shadow.weight:
            return
        self._track(self._shadow(route, shadow, target, request, primary))

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
                endpoint, self._backend_path(target, route, shadow.version, request), request
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
