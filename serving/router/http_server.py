"""The router's HTTP/1.1 server: a raw asyncio protocol over ``httptools``, no ASGI layer.

The router's HTTP side does one thing per request: read it whole, hand it to a handler, write the
answer. An ASGI server plus framework costs a few hundred microseconds of Python per request in
message dicts, scope building and send/receive hops; this protocol parses with the same C parser
uvicorn uses and calls the handler directly. What clients rely on:

- keep-alive and pipelining (answers in request order, one request handled at a time per
  connection), ``Expect: 100-continue``;
- limits with clear answers: a body over ``max_body_bytes`` is 413 (from Content-Length before the
  body is read, or as a chunked body grows), headers over 64 KiB or 100 fields are 431, a request
  whose headers or body do not arrive within ``body_timeout_s`` is 408 (slow clients cost a deadline,
  not a task), a malformed request is 400; each of these closes the connection;
- idle keep-alive connections close after ``keep_alive_s``;
- these time limits are deadlines on the connection that one sweep checks a few times a second
  (at most a quarter of the shortest limit apart), not timers set and cancelled for every request
  (about 3 µs of CPU each, two per request);
- :meth:`HttpServer.drain` stops accepting, answers in-flight requests with ``Connection: close``,
  closes idle connections and waits (bounded) for the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Protocol, cast

import httptools

from modelplane.serving.router.openai_api import error_body as openai_error_body
from modelplane.serving.router.openai_api import is_openai_path

log = logging.getLogger("modelplane.router.http")

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_COUNT = 100
REJECT_LINGER_S = 2.0  # how long a refused client may go on sending before the socket closes


class Request:
    # Made per request: a plain class, not a dataclass (see setup.py).
    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(
        self, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers  # names lower-case, in order received
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Response:
    # Made per request: a plain class, not a dataclass (see setup.py).
    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []  # without content-length


class BodyStream(Protocol):
    """A body that arrives in pieces (a generation's server-sent events)."""

    async def read(self) -> bytes:
        """The next piece, as soon as there is one; b"" at the end. Raises when the body breaks off."""
        ...

    def close(self) -> None:
        """Called once the answer is written, or abandoned (the client left): release the source."""
        ...


class StreamingResponse(Response):
    """An answer whose body is written piece by piece as it arrives (chunked), never buffered.

    A client that leaves cancels the handler's task, which closes the stream; a body that breaks
    off midway ends the connection without the last chunk, so the client sees it incomplete.
    """

    __slots__ = ("stream",)

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], stream: BodyStream) -> None:
        super().__init__(status, b"", headers)
        self.stream = stream


Handler = Callable[[Request], Awaitable[Response]]
# Takes a request and answers it later through the given function, from whatever callback the
# answer arrives in; returns False (and does nothing) for a request it leaves to the `Handler`.
FastHandler = Callable[[Request, Callable[[Response], None]], bool]


def json_response(status: int, payload: object, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    body = json.dumps(payload).encode()
    return Response(status, body, [(b"content-type", b"application/json"), *(headers or [])])


def error_response(status: int, message: str, retry_after: int | None = None) -> Response:
    """The V2 error form: ``{"error": message}``."""
    extra = [(b"retry-after", str(retry_after).encode())] if retry_after is not None else []
    return json_response(status, {"error": message}, extra)


def internal_error(request: Request) -> Response:
    """Log the exception being handled and answer 500: a bug in the router, not the request."""
    log.exception("unhandled error answering %s %s", request.method, request.path)
    return error_response(500, "internal router error; see the router's log")


_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


def rejection_response(path: bytes, status: int, message: str) -> Response:
    """A request refused before it reached a handler: in OpenAI's error form on its API paths."""
    if is_openai_path(path):
        return Response(status, openai_error_body(status, message), [(b"content-type", b"application/json")])
    return error_response(status, message)


def encode_stream_head(
    status: int, headers: list[tuple[bytes, bytes]], chunked: bool, keep_alive: bool
) -> bytes:
    """The head of a streamed answer: chunked, or delimited by the connection's close."""
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))]
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def encode_response(response: Response, keep_alive: bool, head_only: bool = False) -> bytes:
    status = response.status
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))]
    for name, value in response.headers:
        parts.append(name + b": " + value + b"\r\n")
    if status >= 200 and status not in (204, 304):
        parts.append(b"content-length: %d\r\n" % len(response.body))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(response.body)
    return b"".join(parts)


class _RequestRejectedError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _query(url: httptools.parser.url_parser.URL) -> bytes:
    """The URL's query, b"" when it has none (httptools' stub says bytes; it is None then)."""
    query: bytes | None = getattr(url, "query")  # noqa: B009 - read untyped: compiled code checks types
    return query or b""


class HttpConnection(asyncio.Protocol):
    """One client connection: parse requests, run the handler for each in order, write answers."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: deque[tuple[Request, bool]] = deque()
        self.active = False  # a request is being answered (or its answer is still being read)
        self._task: asyncio.Task[None] | None = None  # the handler of a request the fast path left
        self._keep_alive = True  # of the request being answered
        self._head = False
        self._respond = self._answer  # bound once: the fast handler gets it for every request
        self.closing = False
        self._writable = asyncio.Event()  # cleared while the client does not read what we write
        self._writable.set()
        self._deadline = 0.0  # loop time at which `_on_deadline` runs, if set
        self._on_deadline: Callable[[], None] | None = None
        self._rejection: tuple[int, str] | None = None  # to answer once the earlier answers are out
        self._reset_message()

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._in_message = False

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)
        self._arm(self.server.keep_alive_s, self._idle_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closing or self._rejection is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # The router answers in HTTP/1.1 (clients offering h2c, such as Java's HttpClient, carry
            # on with it): the request is already complete; parse what follows it afresh.
            self.parser = httptools.HttpRequestParser(self)
            offset = upgrade.args[0] if upgrade.args and isinstance(upgrade.args[0], int) else len(data)
            if offset < len(data):
                self.data_received(data[offset:])
        except httptools.HttpParserError as exc:
            # A limit raised inside a callback reaches here wrapped by the parser.
            cause = exc.__context__ if isinstance(exc.__context__, _RequestRejectedError) else None
            if cause is not None:
                self._reject(cause.status, cause.message)
            else:
                self._reject(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._writable.set()
        self._disarm()
        self.server.connections.discard(self)
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the client left: stop waiting for its answer
        self.pending.clear()

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset_message()
        self._in_message = True
        self._arm(self.server.body_timeout_s, self._body_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))
        self._count_header_bytes(len(name) + len(value))
        if len(self._headers) > MAX_HEADER_COUNT:
            raise _RequestRejectedError(431, f"more than {MAX_HEADER_COUNT} header fields")

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _RequestRejectedError(431, f"request line and headers exceed {MAX_HEADER_BYTES} bytes")

    def on_headers_complete(self) -> None:
        if self.parser.get_method() == b"CONNECT":
            raise _RequestRejectedError(405, "CONNECT is not supported: the router is not a forward proxy")
        limit = self.server.max_body_bytes
        expect_continue = False
        for name, value in self._headers:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise _RequestRejectedError(400, "invalid Content-Length") from None
                if declared > limit:
                    raise _RequestRejectedError(
                        413, f"request body of {declared} bytes exceeds the limit of {limit}"
                    )
            elif name == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        # Only when no earlier answer is pending (it would come out of order) and the client speaks
        # HTTP/1.1; otherwise the client sends its body after its own short wait.
        if expect_continue and not self.active and self.parser.get_http_version() == "1.1":
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.server.max_body_bytes:
            raise _RequestRejectedError(
                413, f"request body exceeds the limit of {self.server.max_body_bytes} bytes"
            )
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_message = False
        parsed = httptools.parse_url(self._url)
        path = parsed.path.decode("latin-1")
        request = Request(
            method=self.parser.get_method().decode("latin-1"),
            path=path,
            query=_query(parsed),
            headers=self._headers,
            body=b"".join(self._body),
        )
        keep_alive = self.parser.should_keep_alive()
        self._reset_message()
        if not self.active:
            self._start(request, keep_alive)
        else:  # pipelined: answer in order, stop reading until the backlog is done
            self.pending.append((request, keep_alive))
            if self.transport is not None:
                self.transport.pause_reading()

    # -- handling -----------------------------------------------------------------------------------

    def _start(self, request: Request, keep_alive: bool) -> None:
        self.server.in_flight += 1
        self.active = True
        self._keep_alive = keep_alive
        self._head = request.method == "HEAD"
        fast = self.server.fast_handler
        try:
            taken = fast is not None and fast(request, self._respond)
        except Exception:  # inside the parser's callback: answer here, not as a malformed request
            self._answer(internal_error(request))
            return
        if not taken:
            self._task = self.loop.create_task(self._handle(request))

    async def _handle(self, request: Request) -> None:
        try:
            response = await self.server.handler(request)
        except asyncio.CancelledError:  # the client left
            self.server.finished()
            raise
        except Exception:
            response = internal_error(request)
        if isinstance(response, StreamingResponse):
            await self._stream(response)
            return
        self._answer(response)

    async def _stream(self, response: StreamingResponse) -> None:
        """Write a streamed answer, then take up what comes next (or close, if it broke off)."""
        keep_alive = self._keep_alive and not self.server.draining
        try:
            complete = await self._write_stream(response, keep_alive)
        except asyncio.CancelledError:  # the client left: the stream is closed below
            self.server.finished()
            raise
        finally:
            response.stream.close()
        self.server.finished()
        self._next(keep_alive and complete)

    async def _write_stream(self, response: StreamingResponse, keep_alive: bool) -> bool:
        """Each piece as it arrives: chunked on a kept connection, else delimited by the close.
        False when the answer could not be completed (the body broke off, the client went away)."""
        transport = self.transport
        if transport is None or self.closing:
            return False
        chunked = keep_alive
        transport.write(encode_stream_head(response.status, response.headers, chunked, keep_alive))
        if self._head:
            return True
        stream = response.stream
        try:
            while chunk := await stream.read():
                if transport.is_closing():  # the client left
                    return False
                transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                if not self._writable.is_set():  # the client reads slowly: so does the backend
                    await self._writable.wait()
        except Exception as exc:  # the body broke off: nothing more can be said in this answer
            log.warning("streamed answer broke off: %s", exc or type(exc).__name__)
            return False
        if transport.is_closing():
            return False
        if chunked:
            transport.write(b"0\r\n\r\n")
        return True

    def _answer(self, response: Response) -> None:
        """Write the answer to the request being handled, then take up what comes next."""
        keep_alive = self._keep_alive and not self.server.draining
        if self.transport is not None and not self.closing:
            self.transport.write(encode_response(response, keep_alive, self._head))
        self.server.finished()
        if self._writable.is_set():
            self._next(keep_alive)
        else:
            # A client that pipelines without reading: take up its next request only once it has
            # read this answer, so unread answers cannot pile up in the router's memory.
            self._task = self.loop.create_task(self._next_when_read(keep_alive))

    async def _next_when_read(self, keep_alive: bool) -> None:
        await self._writable.wait()
        self._next(keep_alive)

    def _next(self, keep_alive: bool) -> None:
        self.active = False
        if not keep_alive:
            self._close()
        elif self.closing:
            return
        elif self.pending:
            request, keep_alive = self.pending.popleft()
            if not self.pending and self.transport is not None:
                self.transport.resume_reading()
            self._start(request, keep_alive)
        elif self._rejection is not None:
            self._reject(*self._rejection)
        elif self._in_message:  # the next request is still arriving: its time limit starts now
            self._arm(self.server.body_timeout_s, self._body_timeout)
        else:
            self._arm(self.server.keep_alive_s, self._idle_timeout)

    # -- timers and closing -------------------------------------------------------------------------

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._deadline = self.loop.time() + seconds
        self._on_deadline = callback

    def _disarm(self) -> None:
        self._on_deadline = None

    def check_deadline(self, now: float) -> None:
        """Run the armed time limit's callback if it is due (called by the server's sweep)."""
        callback = self._on_deadline
        if callback is not None and now >= self._deadline:
            self._on_deadline = None
            callback()

    def _idle_timeout(self) -> None:
        if not self.active and not self._in_message:
            self._close()

    def _body_timeout(self) -> None:
        if not self.active and self._in_message:
            self._reject(408, f"request not received within {self.server.body_timeout_s:g}s")

    def _reject(self, status: int, message: str) -> None:
        """Answer a request the router will not read to the end, and close the connection.

        The close lingers: the client may still be sending the body it was refused, and closing a
        socket with unread data resets it, which would destroy the answer before the client reads
        it. So the router stops writing, drops what still arrives, and closes a moment later.
        """
        transport = self.transport
        if transport is None or self.closing:
            self._close()
            return
        if self.active:  # a pipelined request went bad: answer the earlier ones first
            self._rejection = (status, message)
            return
        transport.write(encode_response(rejection_response(self._url, status, message), keep_alive=False))
        self.closing = True
        self._disarm()
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(REJECT_LINGER_S, transport.close)

    def _close(self) -> None:
        self.closing = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    def close_if_idle(self) -> None:
        if not self.active and not self._in_message:
            self._close()


class HttpServer:
    """Listening sockets and the connections they accepted."""

    def __init__(
        self,
        handler: Handler,
        *,
        fast_handler: FastHandler | None = None,
        max_body_bytes: int = 64 * 1024 * 1024,
        body_timeout_s: float = 30.0,
        keep_alive_s: float = 30.0,
    ) -> None:
        self.handler = handler
        self.fast_handler = fast_handler
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.keep_alive_s = keep_alive_s
        self.connections: set[HttpConnection] = set()
        self.in_flight = 0
        self.draining = False
        self.sweep_s = max(0.01, min(1.0, body_timeout_s / 4, keep_alive_s / 4))
        self._quiet = asyncio.Event()  # set whenever the last request in flight finishes
        self._servers: list[asyncio.Server] = []
        self._sweeper: asyncio.TimerHandle | None = None

    async def listen(self, host: str | None = None, port: int = 0, sock: socket.socket | None = None) -> None:
        loop = asyncio.get_running_loop()
        if sock is not None:
            server = await loop.create_server(lambda: HttpConnection(self), sock=sock, backlog=1024)
        else:
            server = await loop.create_server(
                lambda: HttpConnection(self), host, port, backlog=1024, reuse_address=True
            )
        self._servers.append(server)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.sweep_s, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Enforce the connections' time limits (idle, slow headers or body)."""
        now = loop.time()
        for connection in list(self.connections):
            connection.check_deadline(now)
        self._sweeper = loop.call_later(self.sweep_s, self._sweep, loop)

    def finished(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._quiet.set()

    @property
    def ports(self) -> list[int]:
        return [s.getsockname()[1] for server in self._servers for s in server.sockets]

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting; let requests in flight finish (their answers close the connection)."""
        self.draining = True
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.close_if_idle()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.in_flight:
                    self._quiet.clear()
                    await self._quiet.wait()
        for connection in list(self.connections):
            connection._close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
