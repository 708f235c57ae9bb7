"""The router's V2 HTTP front end: a lean ASGI app that forwards each request to a chosen endpoint.

Per request: parse the target model from the path, pick a version (weighted split or a pinned
version), pick an endpoint (two choices, least outstanding), forward over a pooled keep-alive
connection, retry on another endpoint when the connection fails or the runtime answers 503 (within
the retry budget), and optionally copy the request to a shadow version afterwards. A model scaled
to zero holds the request in the activation queue instead of failing it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modelplane.serving.router.balancing import Backend, Endpoint, pick_endpoint
from modelplane.serving.router.dispatch import BackendUnavailableError, Dispatcher, RequestError
from modelplane.serving.router.paths import NAMESPACE_HEADER, Target, parse_target
from modelplane.serving.router.routes import ModelRoute
from modelplane.serving.router.shadow import outputs_match

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Headers that describe the connection, not the message: never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
        b"host",
        b"content-length",
    }
)
STICKY_HEADER = b"x-modelplane-session"


@dataclass(frozen=True)
class HttpSettings:
    """Limits and timeouts of the HTTP front end (from the command line)."""

    max_body_bytes: int = 64 * 1024 * 1024
    body_timeout_s: float = 30.0
    connect_timeout_s: float = 2.0
    request_timeout_s: float = 120.0


@dataclass
class Forwarded:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    seconds: float


class HttpFrontEnd:
    """ASGI application; ``start``/``close`` manage the backend connection pool."""

    def __init__(self, dispatcher: Dispatcher, settings: HttpSettings | None = None) -> None:
        self.dispatcher = dispatcher
        self.metrics = dispatcher.metrics
        self.settings = settings or HttpSettings()
        self.draining = False
        self._session: aiohttp.ClientSession | None = None
        self._shadow_tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=256, keepalive_timeout=60, enable_cleanup_closed=True
        )
        timeout = aiohttp.ClientTimeout(
            total=self.settings.request_timeout_s, sock_connect=self.settings.connect_timeout_s
        )
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)

    async def close(self) -> None:
        for task in list(self._shadow_tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    # -- ASGI ---------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path in ("/healthz", "/v2/health/live"):
            await _respond(send, 200, b"")
            return
        if path in ("/readyz", "/v2/health/ready"):
            await _respond(send, 503 if self.draining else 200, b"")
            return
        if path == "/metrics":
            await _respond(send, 200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST.encode())
            return
        if path in ("/v2/models", "/v2/repository/index") and method in ("GET", "POST"):
            await _respond_json(send, 200, self._index())
            return
        headers = dict(scope["headers"])
        namespace = headers.get(NAMESPACE_HEADER.encode(), b"").decode("latin-1") or None
        target = parse_target(path, namespace)
        if target is None:
            await _error(send, 404, f"no V2 model route for {path!r}; use /v2/models/NAME/...")
            return
        try:
            body = await self._read_body(scope, receive)
            forwarded, route, version = await self._route(target, method, scope, body)
        except RequestError as exc:
            await _error(send, exc.status, exc.message, exc.retry_after)
            self.metrics.request_count(target.model, "", str(exc.status)).inc()
            return
        await send({"type": "http.response.start", "status": forwarded.status, "headers": forwarded.headers})
        await send({"type": "http.response.body", "body": forwarded.body})
        self.metrics.request_count(target.model, version, str(forwarded.status)).inc()
        self.metrics.request_latency(target.model).observe(forwarded.seconds)
        if route.shadow is not None and target.rest == "/infer" and forwarded.status == 200:
            self._maybe_shadow(route, target, method, scope, body, forwarded)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.draining = True
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- request handling ---------------------------------------------------------------------------

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise RequestError(400, "invalid Content-Length") from None
                if declared > limit:
                    raise RequestError(413, f"request body of {declared} bytes exceeds the limit of {limit}")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise RequestError(400, "client disconnected before sending the whole body")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise RequestError(
                408, f"request body not received within {self.settings.body_timeout_s:g}s"
            ) from None
        return b"".join(chunks)

    async def _route(
        self, target: Target, method: str, scope: Scope, body: bytes
    ) -> tuple[Forwarded, ModelRoute, str]:
        sticky = None
        for name, value in scope["headers"]:
            if name == STICKY_HEADER:
                sticky = value.decode("latin-1")

        async def call(route: ModelRoute, endpoint: Endpoint, version: str) -> Forwarded:
            try:
                path = target.backend_path(version, route.backend_model)
                return await self._forward(endpoint, path, method, scope, body)
            except aiohttp.ClientConnectionError as exc:  # refused, reset, connect timeout: try another
                raise BackendUnavailableError(f"{exc.__class__.__name__}: {exc}") from exc
            except TimeoutError:  # the backend took the request but is slow: retrying would pile on
                raise RequestError(
                    504,
                    f"model {target.model!r}: {endpoint.key} did not answer within "
                    f"{self.settings.request_timeout_s:g}s",
                ) from None

        done = await self.dispatcher.dispatch(
            target.model,
            target.namespace,
            target.version,
            sticky,
            call,
            unavailable=lambda f: f.status == 503,
            failed=lambda f: f.status >= 500,
        )
        return done.result, done.route, done.version

    async def _forward(
        self, endpoint: Endpoint, path: str, method: str, scope: Scope, body: bytes
    ) -> Forwarded:
        assert self._session is not None, "Router.start() was not called"
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in HOP_BY_HOP
        ]
        url = endpoint.http + path
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        started = time.perf_counter()
        async with self._session.request(method, url, data=body, headers=headers) as response:
            payload = await response.read()
        out_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in response.headers.items()
            if k.lower().encode("latin-1") not in HOP_BY_HOP
        ]
        out_headers.append((b"content-length", str(len(payload)).encode()))
        return Forwarded(response.status, out_headers, payload, time.perf_counter() - started)

    # -- shadow traffic -----------------------------------------------------------------------------

    def _maybe_shadow(
        self, route: ModelRoute, target: Target, method: str, scope: Scope, body: bytes, primary: Forwarded
    ) -> None:
        shadow = route.shadow
        assert shadow is not None
        if self.dispatcher.rng.randrange(100) >= shadow.weight:
            return
        task = asyncio.get_running_loop().create_task(
            self._shadow(route, shadow, target, method, scope, body, primary)
        )
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(
        self,
        route: ModelRoute,
        shadow: Backend,
        target: Target,
        method: str,
        scope: Scope,
        body: bytes,
        primary: Forwarded,
    ) -> None:
        endpoint = pick_endpoint(
            route.endpoints.get(shadow.version, []), self.dispatcher.rng, time.monotonic()
        )
        if endpoint is None:
            self.metrics.shadow.labels(model=route.name, result="error").inc()
            return
        try:
            copy = await self._forward(
                endpoint, target.backend_path(shadow.version, route.backend_model), method, scope, body
            )
        except (aiohttp.ClientError, TimeoutError):
            self.metrics.shadow.labels(model=route.name, result="error").inc()
            return
        self.metrics.shadow_latency_delta.labels(model=route.name).observe(copy.seconds - primary.seconds)
        if copy.status != 200:
            result = "error"
        else:
            result = (
                "match"
                if outputs_match(primary.body, primary.headers, copy.body, copy.headers)
                else "mismatch"
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


async def _respond(send: Send, status: int, body: bytes, content_type: bytes = b"text/plain") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _respond_json(send: Send, status: int, payload: Any) -> None:
    await _respond(send, status, json.dumps(payload).encode(), b"application/json")


async def _error(send: Send, status: int, message: str, retry_after: int | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
