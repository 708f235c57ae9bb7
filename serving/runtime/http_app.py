"""The V2 HTTP front end as a plain ASGI app (no framework: the hot path is a few dict lookups).

Routes: ``/v2``, ``/v2/health/{live,ready}``,
``/v2/models/{m}[/versions/{v}][/ready|/infer|/config|/stats]``, ``/v2/models/stats``,
``/v2/repository/index``, ``/v2/repository/models/{m}/{load,unload}``,
``/v2/systemsharedmemory[/region/{r}]/{status,register,unregister}`` (``cudasharedmemory``: refused),
``/metrics``.
Every error is ``{"error": "..."}`` with the status from :class:`InferenceError`.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from google.protobuf import json_format

from modelplane import __version__
from modelplane.serving.runtime.codec import decode_request, encode_response, error_body
from modelplane.serving.runtime.errors import InferenceError, bad_request
from modelplane.serving.runtime.inference import infer, model_metadata
from modelplane.serving.runtime.lifecycle import Lifecycle
from modelplane.serving.runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from modelplane.serving.runtime.metrics import RuntimeMetrics
from modelplane.serving.runtime.models import ModelManager, ServedModel
from modelplane.serving.runtime.shared_memory import CUDA_UNAVAILABLE, SharedMemoryRegistry
from modelplane.serving.runtime.statistics import model_statistics_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
#: Triton's names of the protocol extensions served (``GET /v2`` and gRPC ServerMetadata list them).
EXTENSIONS = [
    "binary_tensor_data",
    "model_configuration",
    "model_repository",
    "statistics",
    "system_shared_memory",
]

_JSON = [(b"content-type", b"application/json")]
_BINARY = b"application/octet-stream"


class _BodyTooLargeError(Exception):
    pass


def route(method: str, path: str) -> tuple[str, str, str | None]:
    """Map a request to ``(action, model, version)``; action ``""`` when nothing matches.

    Pure, so the URL grammar is unit-tested without a server.
    """
    parts = path.strip("/").split("/")
    if not parts or parts[0] != "v2":
        return ("metrics", "", None) if parts == ["metrics"] and method == "GET" else ("", "", None)
    rest = parts[1:]
    if not rest:
        return ("server_metadata", "", None) if method == "GET" else ("", "", None)
    if rest[0] == "health" and len(rest) == 2 and rest[1] in ("live", "ready") and method == "GET":
        return (rest[1], "", None)
    if rest[0] == "repository":
        if rest == ["repository", "index"] and method == "POST":
            return ("index", "", None)
        if len(rest) == 4 and rest[1] == "models" and rest[3] in ("load", "unload") and method == "POST":
            return (rest[3], rest[2], None)
        return ("", "", None)
    if rest[0] in ("systemsharedmemory", "cudasharedmemory"):
        return shared_memory_route(method, rest)
    if rest[0] != "models" or len(rest) < 2:
        return ("", "", None)
    if rest == ["models", "stats"]:
        return ("stats", "", None) if method == "GET" else ("", "", None)
    name, tail, version = rest[1], rest[2:], None
    if len(tail) >= 2 and tail[0] == "versions":
        version, tail = tail[1], tail[2:]
    if not tail:
        return ("model_metadata", name, version) if method == "GET" else ("", "", None)
    if tail == ["infer"] and method == "POST":
        return ("infer", name, version)
    if tail == ["ready"] and method == "GET":
        return ("model_ready", name, version)
    if tail == ["config"] and method == "GET":
        return ("model_config", name, version)
    if tail == ["stats"] and method == "GET":
        return ("stats", name, version)
    return ("", "", None)


def shared_memory_route(method: str, rest: list[str]) -> tuple[str, str, str | None]:
    """``systemsharedmemory[/region/NAME]/status|register|unregister`` -> ``(shm_ACTION, NAME, None)``;
    every ``cudasharedmemory`` call of the same shapes -> ``("cuda_shm", NAME, None)``."""
    if len(rest) == 2:
        name, verb = "", rest[1]
    elif len(rest) == 4 and rest[1] == "region" and rest[2]:
        name, verb = rest[2], rest[3]
    else:
        return ("", "", None)
    wanted = {"status": "GET", "register": "POST", "unregister": "POST"}.get(verb)
    if wanted != method or (verb == "register" and not name):
        return ("", "", None)
    return ("cuda_shm" if rest[0] == "cudasharedmemory" else f"shm_{verb}", name, None)


class HttpApp:
    def __init__(
        self,
        manager: ModelManager,
        metrics: RuntimeMetrics,
        lifecycle: Lifecycle,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        shared_memory: SharedMemoryRegistry | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.max_body_bytes = max_body_bytes
        self.shared_memory = shared_memory if shared_memory is not None else SharedMemoryRegistry()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        action, name, version = route(scope["method"], scope["path"])
        try:
            if action == "infer":
                await self._infer(scope, receive, send, name, version)
                return
            if action in ("index", "load", "unload", "shm_unregister", "cuda_shm"):
                await self._read_body(scope, receive)
            if action == "shm_register":
                await self._register(name, await self._read_body(scope, receive), send)
                return
            await self._simple(action, name, version, send)
        except InferenceError as exc:
            await _respond(send, exc.status, error_body(exc.message), _error_headers(exc.status))
        except _BodyTooLargeError:
            await _respond(send, 413, error_body(self._too_large()), _JSON)

    def _too_large(self) -> str:
        return f"request body exceeds the limit of {self.max_body_bytes} bytes (--max-body-bytes)"

    async def _simple(self, action: str, name: str, version: str | None, send: Send) -> None:
        if action == "live":
            await _respond(send, 200, b"", [])
        elif action == "ready":
            ok = self.lifecycle.accepting and self.manager.ready()
            await _respond(send, 200 if ok else 503, b"" if ok else error_body("not ready"), _JSON)
        elif action == "server_metadata":
            doc = {"name": "modelplane", "version": __version__, "extensions": EXTENSIONS}
            await _respond(send, 200, orjson.dumps(doc), _JSON)
        elif action == "model_metadata":
            model = self.manager.resolve(name, version)
            doc = model_metadata(model, self.manager.versions_of(name))
            await _respond(send, 200, orjson.dumps(doc), _JSON)
        elif action == "model_config":
            model = self.manager.resolve(name, version)
            doc = json_format.MessageToDict(model.spec.config, preserving_proto_field_name=True)
            await _respond(send, 200, orjson.dumps(doc), _JSON)
        elif action == "model_ready":
            model = self.manager.resolve(name, version)
            ok = model.state == "READY" and self.lifecycle.accepting
            await _respond(
                send, 200 if ok else 503, b"" if ok else error_body(f"model {name!r} is not ready"), _JSON
            )
        elif action == "stats":
            doc = model_statistics_json(self.manager.statistics(name, version))
            await _respond(send, 200, orjson.dumps(doc), _JSON)
        elif action == "index":
            await _respond(send, 200, orjson.dumps(self.manager.index()), _JSON)
        elif action == "load":
            await self.manager.load(name)
            await _respond(send, 200, b"", _JSON)
        elif action == "unload":
            await self.manager.unload(name)
            await _respond(send, 200, b"", _JSON)
        elif action == "shm_status":
            regions = [region.as_json() for region in self.shared_memory.status(name)]
            await _respond(send, 200, orjson.dumps(regions), _JSON)
        elif action == "shm_unregister":
            self.shared_memory.unregister(name)
            await _respond(send, 200, b"", _JSON)
        elif action == "cuda_shm":
            raise bad_request(CUDA_UNAVAILABLE)
        elif action == "metrics":
            await _respond(
                send, 200, self.metrics.render(), [(b"content-type", METRICS_CONTENT_TYPE.encode())]
            )
        else:
            await _respond(
                send, 404, error_body("not found: see the V2 inference protocol for the routes"), _JSON
            )

    async def _register(self, name: str, body: bytes, send: Send) -> None:
        """Register a system shared memory region from ``{"key", "offset", "byte_size"}``."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"register body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise bad_request('register body must be a JSON object {"key", "offset", "byte_size"}')
        self.shared_memory.register(name, doc.get("key"), doc.get("offset", 0), doc.get("byte_size"))
        await _respond(send, 200, b"", _JSON)

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
    ) -> None:
        started = time.perf_counter()
        code = "500"
        try:
            self.lifecycle.begin()
        except InferenceError as exc:  # draining: answer, and close the connection so clients move on
            self.metrics.request_refused(name, "http", "503")
            headers = [*_error_headers(exc.status), (b"connection", b"close")]
            await _respond(send, exc.status, error_body(exc.message), headers)
            return
        self.metrics.request_started(name)
        try:
            try:
                body = await self._read_body(scope, receive)
            except _BodyTooLargeError:
                code = "413"
                await _respond(send, 413, error_body(self._too_large()), _JSON)
                return
            model: ServedModel | None = None
            try:
                header_length = _header_length(scope)
                model = self.manager.resolve(name, version)
                decoding = time.perf_counter_ns()
                request = decode_request(body, header_length, self.shared_memory)
                input_ns = time.perf_counter_ns() - decoding
                outputs = await infer(model, request, self.shared_memory)
                encoding = time.perf_counter_ns()
                payload, json_length = encode_response(
                    name, str(model.version), request.id, outputs, request.shared_outputs()
                )
                model.stats.request_succeeded(_ns_since(started), input_ns, time.perf_counter_ns() - encoding)
            except InferenceError as exc:
                code = str(exc.status)
                if model is not None:
                    model.stats.request_failed(_ns_since(started))
                headers = self._closing(_error_headers(exc.status))
                await _respond(send, exc.status, error_body(exc.message), headers)
                return
            code = "200"
            if json_length is None:
                await _respond(send, 200, payload, self._closing(_JSON))
            else:
                headers = [
                    (b"content-type", _BINARY),
                    (b"inference-header-content-length", str(json_length).encode()),
                ]
                await _respond(send, 200, payload, self._closing(headers))
        finally:
            self.metrics.request_finished(name, "http", code, time.perf_counter() - started)
            self.lifecycle.end()

    def _closing(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """While draining, the answers to requests admitted before close their connections too: a
        client would otherwise send its next request on a connection the server is about to close
        (and lose it to the race), where a new connection gets a clear 503 or a refusal."""
        if self.lifecycle.draining:
            return [*headers, (b"connection", b"close")]
        return headers

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        encoding = b""
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    if int(value) > limit:
                        raise _BodyTooLargeError
                except ValueError:
                    raise bad_request("invalid Content-Length header") from None
            elif key == b"content-encoding":
                encoding = value.lower()
        message = await receive()
        body: bytes = message.get("body", b"")
        if message.get("more_body", False):
            chunks, size = [body], len(body)
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise _BodyTooLargeError
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
        if len(body) > limit:
            raise _BodyTooLargeError
        if encoding and encoding != b"identity":
            body = _decompress(encoding, body, limit)
        return body


def _decompress(encoding: bytes, body: bytes, limit: int) -> bytes:
    """gzip/deflate bodies (tritonclient's request compression), bounded by the body limit."""
    if encoding not in (b"gzip", b"deflate"):
        raise bad_request(
            f"Content-Encoding {encoding.decode(errors='replace')!r} is not supported (use gzip or deflate)"
        )
    inflater = zlib.decompressobj(wbits=31 if encoding == b"gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise bad_request(f"cannot decompress the {encoding.decode()} body: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _BodyTooLargeError
    return out


def _error_headers(status: int) -> list[tuple[bytes, bytes]]:
    """503s (loading, draining) carry Retry-After, so clients and proxies back off and retry."""
    return [*_JSON, (b"retry-after", b"1")] if status == 503 else _JSON


def _header_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"inference-header-content-length":
            try:
                return int(value)
            except ValueError:
                raise bad_request("Inference-Header-Content-Length must be an integer") from None
    return None


def _ns_since(started: float) -> int:
    """Nanoseconds since ``started`` (a ``time.perf_counter()`` reading)."""
    return int((time.perf_counter() - started) * 1e9)


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
