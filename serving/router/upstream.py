"""A lean HTTP/1.1 client for the router's backends: pooled keep-alive connections, raw asyncio.

The router forwards small, latency-sensitive requests to a handful of runtime pods. A general HTTP
client (aiohttp, httpx) spends several hundred microseconds of Python per request on features the
router does not use (cookies, redirects, URL objects, tracing hooks); this one writes the request
in one buffer, parses the answer with ``httptools`` (the C parser uvicorn uses) and keeps the
connection for the next request. What the router relies on:

- one request at a time per connection, connections pooled per ``host:port`` and reused LIFO (the
  warmest first); idle ones are dropped before the runtime's own keep-alive timeout can race them;
- a connection that fails *before any byte of the answer* is :class:`UpstreamConnectionError`, the
  signal that the dispatcher may retry on another endpoint (within its budget: V2 inference is
  treated as repeatable, as Envoy's ``reset`` retry policy does); for idempotent methods on a
  reused connection the request is first re-sent once on a fresh connection to the same endpoint,
  as Go's transport does, because a runtime closing an idle keep-alive connection is no fault;
- an answer that breaks off midway is :class:`UpstreamProtocolError` (never retried); interim 1xx
  answers are skipped; bytes nobody asked for close the connection; pooled connections that the
  backend closes, or that sit idle past the timeout, leave the pool;
- connect and whole-request timeouts (a request timeout is :class:`TimeoutError`, never retried).
  The request deadline is a number on the connection, checked by one sweep a few times a second
  for all busy connections, not an ``asyncio.timeout`` per request (8.5 µs of CPU each); it fires
  at most ``sweep_s`` late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import cast

import httptools
from mypy_extensions import mypyc_attr

log = logging.getLogger("modelplane.router.upstream")

# Headers that describe the connection, not the message: never forwarded either way.
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
        b"expect",
        b"http2-settings",
    }
)
# Methods safe to send twice: only these are re-sent on a fresh connection when a reused one fails
# before answering. An inference POST is not; the dispatcher decides whether another endpoint may
# take it, within its retry budget.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@mypyc_attr(native_class=False)  # compiled builds: mypyc cannot subclass OSError natively
class UpstreamConnectionError(ConnectionError):
    """The backend could not be reached or dropped the connection before answering."""


class UpstreamResponse:
    # Made per request: a plain class, not a dataclass (see setup.py).
    __slots__ = ("body", "headers", "keep_alive", "status")

    def __init__(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool
    ) -> None:
        self.status = status
        self.headers = headers  # lower-case names, hop-by-hop headers removed
        self.body = body
        self.keep_alive = keep_alive


class _Callback:
    """A waiter that calls back instead of waking a task: ``callback(response, None)`` or
    ``callback(None, error)``, once, from the protocol callback that completes the exchange."""

    __slots__ = ("_callback", "_done")

    def __init__(self, callback: Callable[[UpstreamResponse | None, BaseException | None], None]) -> None:
        self._callback = callback
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, response: UpstreamResponse) -> None:
        self._done = True
        self._call(response, None)

    def set_exception(self, error: BaseException) -> None:
        self._done = True
        self._call(None, error)

    def _call(self, response: UpstreamResponse | None, error: BaseException | None) -> None:
        try:
            self._callback(response, error)
        except Exception:  # never into the protocol callback: that would close the connection
            log.exception("error handling a backend answer")


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a backend; at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the one it runs on, once connected
        self.closed = False
        self.idle_since = 0.0
        self.deadline = 0.0  # loop time by which the answer in flight must be complete
        self.hostport = ""
        self.on_lost: Callable[[_Connection], None] | None = None  # the pool forgets it
        self.on_answered: Callable[[_Connection, bool], None] | None = None  # the pool takes it back
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[UpstreamResponse] | _Callback | None = None
        self._received = False
        self._headers_done = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.loop = asyncio.get_running_loop()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: never let them answer the next request
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"malformed answer from the backend: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_lost is not None:
            self.on_lost(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._headers_done and not self._framed():  # an answer delimited by the close
                status = self._parser.get_status_code()
                headers = [(k, v) for k, v in self._headers if k not in HOP_BY_HOP]
                waiter.set_result(UpstreamResponse(status, headers, b"".join(self._body), False))
            elif self._received:
                waiter.set_exception(UpstreamProtocolError("the backend closed the connection mid-answer"))
            else:
                reason = f": {exc}" if exc else ""
                waiter.set_exception(UpstreamConnectionError(f"connection closed before an answer{reason}"))

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def _framed(self) -> bool:
        return any(k in (b"content-length", b"transfer-encoding") for k, _ in self._headers)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # interim (100 Continue, 103 Early Hints): wait on
            self._headers, self._body, self._headers_done = [], [], False
            return
        keep_alive = self._parser.should_keep_alive()
        headers = [(k, v) for k, v in self._headers if k not in HOP_BY_HOP]
        if self.on_answered is not None:  # free for the next request before this one's task resumes
            self.on_answered(self, keep_alive)
        waiter.set_result(UpstreamResponse(status, headers, b"".join(self._body), keep_alive))

    # -- use ----------------------------------------------------------------------------------------

    def start(self, data: bytes, waiter: asyncio.Future[UpstreamResponse] | _Callback) -> None:
        """Send one request; ``waiter`` gets its answer or the error."""
        assert self.transport is not None
        self._received = False
        self._headers_done = False
        self._headers = []
        self._body = []
        self._waiter = waiter
        self.transport.write(data)

    @property
    def busy(self) -> bool:
        return self._waiter is not None and not self._waiter.done()

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamProtocolError(Exception):
    """The backend answered something that is not HTTP/1.1, or stopped mid-answer (not retried)."""


def encode_request(
    method: str, host: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """The request as bytes: forwarded headers minus hop-by-hop ones, with our Host and length."""
    lines = [f"{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len(body)}\r\n".encode("latin-1")]
    for name, value in headers:
        if name not in HOP_BY_HOP:
            lines.append(name + b": " + value + b"\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


class UpstreamPool:
    """Keep-alive connections per ``host:port``; ``request`` sends one request and reads the answer."""

    def __init__(
        self,
        connect_timeout_s: float = 2.0,
        request_timeout_s: float = 120.0,
        max_idle_per_host: int = 256,
        idle_timeout_s: float = 30.0,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.max_idle_per_host = max_idle_per_host
        self.idle_timeout_s = idle_timeout_s
        # How late a request timeout may fire: a tenth of the timeout, at most half a second.
        self.sweep_s = max(0.01, min(0.5, request_timeout_s / 10))
        self._idle: dict[str, deque[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._next_reap = 0.0

    def request(
        self, hostport: str, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Awaitable[UpstreamResponse]:
        """Send and await the answer; raises UpstreamConnectionError (retry elsewhere) or TimeoutError.

        On a pooled connection this is the connection's own future, with no coroutine around it:
        the connection goes back to the pool from its protocol callback as the answer completes.
        """
        data = encode_request(method, hostport, path, headers, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout_s
        connection = self._take_idle(hostport)
        if connection is not None and method not in IDEMPOTENT:
            return self._send(loop, connection, data, deadline)
        return self._send_retrying_fresh(loop, hostport, method, data, deadline, connection)

    async def _send_retrying_fresh(
        self,
        loop: asyncio.AbstractEventLoop,
        hostport: str,
        method: str,
        data: bytes,
        deadline: float,
        reused: _Connection | None,
    ) -> UpstreamResponse:
        if reused is not None:
            try:
                return await self._send(loop, reused, data, deadline)
            except UpstreamConnectionError:
                if method not in IDEMPOTENT:
                    raise
                # Most likely a keep-alive connection the backend had just closed: once more on
                # a fresh one (safe only because the method may be repeated).
        connection = await self._connect(hostport, deadline - loop.time())
        return await self._send(loop, connection, data, deadline)

    def _send(
        self, loop: asyncio.AbstractEventLoop, connection: _Connection, data: bytes, deadline: float
    ) -> asyncio.Future[UpstreamResponse]:
        waiter: asyncio.Future[UpstreamResponse] = loop.create_future()
        self._start(loop, connection, data, deadline, waiter)
        return waiter

    def _start(
        self,
        loop: asyncio.AbstractEventLoop,
        connection: _Connection,
        data: bytes,
        deadline: float,
        waiter: asyncio.Future[UpstreamResponse] | _Callback,
    ) -> None:
        connection.deadline = deadline
        self._busy.add(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.sweep_s, self._sweep, loop)
        connection.start(data, waiter)

    def send_pooled(
        self,
        hostport: str,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        callback: Callable[[UpstreamResponse | None, BaseException | None], None],
    ) -> bool:
        """Send on an idle pooled connection and call ``callback(response, error)`` from the
        protocol callback that completes the exchange (no task, no future); False, and nothing
        sent, when no idle connection is at hand (then :meth:`request` dials one).

        For methods that are not re-sent (see ``IDEMPOTENT``): a connection that fails before any
        byte of the answer gives :class:`UpstreamConnectionError`, for the caller to decide.
        """
        connection = self._take_idle(hostport)
        if connection is None:
            return False
        loop = connection.loop
        assert loop is not None  # set as it connected
        data = encode_request(method, hostport, path, headers, body)
        self._start(loop, connection, data, loop.time() + self.request_timeout_s, _Callback(callback))
        return True

    def _answered(self, connection: _Connection, keep_alive: bool) -> None:
        self._busy.discard(connection)
        if keep_alive and not connection.closed and not self._closed:
            self._give_back(connection)
        else:
            connection.close()

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail requests past their deadline and close connections whose request was abandoned
        (cancelled: the client left); runs while any request is in flight."""
        now = loop.time()
        for connection in list(self._busy):
            if not connection.busy:
                self._busy.discard(connection)
                connection.close()
            elif connection.deadline <= now:
                connection._fail(
                    TimeoutError(f"{connection.hostport} did not answer within {self.request_timeout_s:g}s")
                )
        self._sweeper = loop.call_later(self.sweep_s, self._sweep, loop) if self._busy else None

    def _take_idle(self, hostport: str) -> _Connection | None:
        """The warmest usable idle connection to ``hostport`` (reaping idle ones when due)."""
        now = time.monotonic()
        if now >= self._next_reap:
            self._reap(now)
        idle = self._idle.get(hostport)
        if not idle:
            return None
        oldest_usable = now - self.idle_timeout_s
        connection = None
        while idle:
            candidate = idle.pop()
            if not candidate.closed and candidate.idle_since >= oldest_usable:
                connection = candidate
                break
            candidate.close()
        if not idle:
            del self._idle[hostport]
        return connection

    def _give_back(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.hostport, deque())
        if len(idle) >= self.max_idle_per_host:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def _discard(self, connection: _Connection) -> None:
        """A connection closed (by the backend, a pod that went away, or us): drop it now."""
        self._busy.discard(connection)
        idle = self._idle.get(connection.hostport)
        if idle is None:
            return
        with contextlib.suppress(ValueError):  # in use, not pooled
            idle.remove(connection)
        if not idle:
            del self._idle[connection.hostport]

    def _reap(self, now: float) -> None:
        """Close connections idle past the timeout, for every endpoint (gone pods included)."""
        self._next_reap = now + min(10.0, self.idle_timeout_s)
        oldest_usable = now - self.idle_timeout_s
        for hostport, idle in list(self._idle.items()):
            for connection in [c for c in idle if c.idle_since < oldest_usable]:
                connection.close()  # its on_lost removes it
            if not idle:
                self._idle.pop(hostport, None)

    @property
    def idle_connections(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    async def _connect(self, hostport: str, time_left_s: float) -> _Connection:
        host, _, port = hostport.rpartition(":")
        loop = asyncio.get_running_loop()
        limit = min(self.connect_timeout_s, time_left_s)  # the request's own deadline may come first
        try:
            if limit <= 0:
                raise TimeoutError
            async with asyncio.timeout(limit):
                _, protocol = await loop.create_connection(_Connection, host.strip("[]"), int(port))
        except TimeoutError:
            if limit < self.connect_timeout_s:
                raise TimeoutError(f"{hostport} did not answer within {self.request_timeout_s:g}s") from None
            raise UpstreamConnectionError(
                f"connect to {hostport} timed out after {self.connect_timeout_s:g}s"
            ) from None
        except OSError as exc:
            raise UpstreamConnectionError(f"cannot connect to {hostport}: {exc}") from exc
        protocol.hostport = hostport
        protocol.on_lost = self._discard
        protocol.on_answered = self._answered
        return protocol

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
