"""The OpenAI API front end: ``/v1`` requests routed by the body's ``model``, answers streamed through.

Per request (see :mod:`.openai_api` for the scheme): parse the JSON body's ``model``, find the
route (namespace from ``/ns/NAMESPACE/v1/...`` or ``X-Modelplane-Namespace``), wait for activation
when the model is scaled to zero (streaming requests too), pick the version and an endpoint (least
loaded by the engines' scraped load, or by prefix affinity: :mod:`.affinity`), and forward with the
body's ``model`` set to the name the runtime serves. The answer's head comes back as soon as the
runtime sends it; a streamed answer (server-sent events, or any chunked body) is relayed piece by
piece as it arrives, with ``"model"`` set back to the client's name in each event. A failure before
any byte of the answer is retried on another endpoint (within the retry budget), never one after.

The request counts as in flight (gauges, the autoscaler's concurrency integral, the endpoint's
outstanding count) until its last byte is relayed. A client that leaves mid-answer closes the
connection to the runtime at once, which aborts the generation there.

Interpreted, not compiled: generation dominates the time of these requests.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from modelplane.serving.router.affinity import DEFAULT_EPSILON, choose_endpoint
from modelplane.serving.router.balancing import Endpoint
from modelplane.serving.router.dispatch import BackendUnavailableError, Dispatcher, RequestError
from modelplane.serving.router.http_server import Request, Response, StreamingResponse, json_response
from modelplane.serving.router.openai_api import (
    ModelRewriter,
    OpenAIError,
    OpenAIPath,
    error_body,
    model_card,
    model_of,
    models_listing,
    parse_body,
    parse_openai_path,
    prompt_prefix,
    router_error,
    with_model,
)
from modelplane.serving.router.paths import NAMESPACE_HEADER
from modelplane.serving.router.routes import ModelRoute
from modelplane.serving.router.stream_upstream import StreamPool, UpstreamStream
from modelplane.serving.router.upstream import UpstreamConnectionError, UpstreamProtocolError

_NAMESPACE_HEADER = NAMESPACE_HEADER.encode()
STICKY_HEADER = b"x-modelplane-session"
_JSON = [(b"content-type", b"application/json")]


class OpenAISettings:
    """Limits of the OpenAI front end (from the router's settings)."""

    def __init__(
        self,
        default_namespace: str = "default",
        max_body_bytes: int = 64 * 1024 * 1024,
        connect_timeout_s: float = 2.0,
        request_timeout_s: float = 120.0,
        prefix_chars: int = 256,
        affinity_epsilon: float = DEFAULT_EPSILON,
    ) -> None:
        self.default_namespace = default_namespace
        self.max_body_bytes = max_body_bytes  # also the bound on a non-streamed answer
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s  # for the answer's head, and between its pieces
        self.prefix_chars = prefix_chars  # how much of the prompt decides prefix affinity
        self.affinity_epsilon = affinity_epsilon  # the load bound: (1 + epsilon) x the average


class Opened:
    """One attempt's answer: whole (``body``), or its head with the body still arriving (``stream``)."""

    __slots__ = ("body", "endpoint", "headers", "started", "status", "stream")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        stream: UpstreamStream | None,
        endpoint: Endpoint,
        started: float,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.stream = stream
        self.endpoint = endpoint
        self.started = started


def _unavailable(opened: Opened) -> bool:
    return opened.status == 503


def _failed(opened: Opened) -> bool:
    return opened.status >= 500


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


class _Relay:
    """The body of a streamed answer, relayed piece by piece (a :class:`BodyStream`)."""

    def __init__(
        self, upstream: UpstreamStream, rewriter: ModelRewriter | None, finished: Callable[[], None]
    ) -> None:
        self.upstream = upstream
        self.rewriter = rewriter
        self.finished: Callable[[], None] | None = finished

    async def read(self) -> bytes:
        while True:
            chunk = await self.upstream.read()
            rewriter = self.rewriter
            if rewriter is None:
                return chunk
            if not chunk:
                self.rewriter = None
                return rewriter.flush()  # b"" when nothing was left over: the end
            chunk = rewriter.feed(chunk)
            if chunk:
                return chunk

    def close(self) -> None:
        self.upstream.close()  # before the end: closes the connection, the runtime aborts
        finished, self.finished = self.finished, None
        if finished is not None:
            finished()


class OpenAIFrontEnd:
    """Answers ``/v1`` requests (``handle``, the V2 front end's fallback); ``close`` releases connections."""

    def __init__(self, dispatcher: Dispatcher, settings: OpenAISettings | None = None) -> None:
        self.dispatcher = dispatcher
        self.metrics = dispatcher.metrics
        self.settings = settings = settings or OpenAISettings()
        self.pool = StreamPool(settings.connect_timeout_s, settings.request_timeout_s)

    async def close(self) -> None:
        await self.pool.close()

    async def handle(self, request: Request) -> Response | None:
        """The answer to an OpenAI API request, or None when the path is not one."""
        header = request.header(_NAMESPACE_HEADER)
        target = parse_openai_path(request.path, header.decode("latin-1") if header else None)
        if target is None:
            return None
        try:
            return await self._handle(request, target)
        except OpenAIError as exc:
            return refusal(exc)

    async def _handle(self, request: Request, target: OpenAIPath) -> Response:
        path, method = target.path, request.method
        namespace = target.namespace or self.settings.default_namespace
        routes = self.dispatcher.table.routes
        if path in ("/v1/models", "/v1/models/"):
            if method not in ("GET", "HEAD"):
                raise OpenAIError(405, f"{method} {path} is not supported: GET it")
            return json_response(200, models_listing(routes, namespace))
        if path.startswith("/v1/models/") and method in ("GET", "HEAD"):
            model = unquote(path.removeprefix("/v1/models/"))
            card = model_card(routes, namespace, model)
            if card is None:
                raise OpenAIError(404, f"The model `{model}` does not exist.", "model", "model_not_found")
            return json_response(200, card)
        if method != "POST":
            raise OpenAIError(405, f"{method} {path} is not routed: POST a JSON body with a `model`")
        payload = parse_body(request.body)
        model = model_of(payload)
        return await self._forward(request, target, payload, model)

    async def _forward(
        self, request: Request, target: OpenAIPath, payload: dict[str, Any], model: str
    ) -> Response:
        dispatcher = self.dispatcher
        settings = self.settings
        path = target.path + ("?" + request.query.decode("latin-1") if request.query else "")
        sticky = request.header(STICKY_HEADER)
        prefixes: dict[bool, str | None] = {}  # computed once, for the first route that wants it

        def pick(
            route: ModelRoute, endpoints: list[Endpoint], now: float, tried: set[str]
        ) -> Endpoint | None:
            prefix = None
            if route.prefix_affinity:
                if True not in prefixes:
                    prefixes[True] = prompt_prefix(payload, settings.prefix_chars)
                prefix = prefixes[True]
            return choose_endpoint(endpoints, dispatcher.rng, now, tried, prefix, settings.affinity_epsilon)

        def call(route: ModelRoute, endpoint: Endpoint, version: str) -> Awaitable[Opened]:
            backend = route.backend_model
            if backend is None or backend == model:
                return self._attempt(route, endpoint, path, request.headers, request.body)
            # The runtime knows the model by another name: send it that, and ask for an answer it
            # can be given back in (no compression) with the client's name put back.
            headers = [(k, v) for k, v in request.headers if k != b"accept-encoding"]
            return self._attempt(route, endpoint, path, headers, with_model(payload, backend))

        try:
            done = await dispatcher.dispatch_picking(
                model,
                target.namespace,
                sticky.decode("latin-1") if sticky is not None else None,
                pick,
                call,
                _unavailable,
                _failed,
            )
        except RequestError as exc:
            self.metrics.request_count(model, "", str(exc.status)).inc()
            raise router_error(exc.status, exc.message, exc.retry_after) from None
        opened, route = done.result, done.route
        self.metrics.request_count(model, done.version, str(opened.status)).inc()
        backend = route.backend_model
        rewriter = None
        if backend is not None and backend != model and _header(opened.headers, b"content-encoding") is None:
            rewriter = ModelRewriter(backend, model)
        content_type = _header(opened.headers, b"content-type") or b""
        if opened.stream is None:
            self.metrics.request_latency(model).observe(time.perf_counter() - opened.started)
            body = opened.body
            if rewriter is not None and content_type.startswith(b"application/json"):
                body = rewriter.rewrite(body)
            return Response(opened.status, body, opened.headers)
        endpoint = opened.endpoint

        def finished() -> None:  # the stream's end, or its client leaving: no longer in flight
            dispatcher.end_attempt(route, endpoint)
            self.metrics.request_latency(model).observe(time.perf_counter() - opened.started)

        events = rewriter if content_type.startswith(b"text/event-stream") else None
        return StreamingResponse(opened.status, opened.headers, _Relay(opened.stream, events, finished))

    async def _attempt(
        self,
        route: ModelRoute,
        endpoint: Endpoint,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> Opened:
        """One try on one endpoint: the answer's head, then its body unless it is to be streamed.

        A streamed answer keeps counting as an attempt in flight (``begin_attempt`` once more, the
        relay's end undoes it) after the dispatcher's count for the attempt ends.
        """
        started = time.perf_counter()
        try:
            upstream = await self.pool.open(endpoint.authority, "POST", path, headers, body)
        except UpstreamConnectionError as exc:  # nothing was answered: another endpoint may take it
            raise BackendUnavailableError(str(exc)) from exc
        except UpstreamProtocolError as exc:
            raise RequestError(502, f"model {route.name!r}: {endpoint.key}: {exc}") from None
        except TimeoutError:
            limit = self.settings.request_timeout_s
            raise RequestError(
                504, f"model {route.name!r}: {endpoint.key} did not answer within {limit:g}s"
            ) from None
        if upstream.status < 300 and upstream.chunked:
            self.dispatcher.begin_attempt(route, endpoint)
            return Opened(upstream.status, upstream.headers, b"", upstream, endpoint, started)
        try:
            whole = await upstream.read_all(self.settings.max_body_bytes)
        except UpstreamProtocolError as exc:
            raise RequestError(502, f"model {route.name!r}: {endpoint.key}: {exc}") from None
        except TimeoutError:
            limit = self.settings.request_timeout_s
            raise RequestError(504, f"model {route.name!r}: {endpoint.key} stalled for {limit:g}s") from None
        finally:
            upstream.close()
        return Opened(upstream.status, upstream.headers, whole, None, endpoint, started)


def refusal(exc: OpenAIError) -> Response:
    """A refusal in OpenAI's error form, with ``Retry-After`` when the router suggests one."""
    headers = list(_JSON)
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    return Response(exc.status, error_body(exc.status, exc.message, exc.param, exc.code), headers)
