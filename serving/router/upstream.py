"""A lean HTTP/1.1 client for the router's backends: pooled keep-alive connections, raw asyncio.

The router forwards small, latency-sensitive requests to a handful of runtime pods. A general HTTP
client (aiohttp, httpx) spends several hundred microseconds of Python per request on features the
router does not use (cookies, redirects, URL objects, tracing hooks); this one writes the request
in one buffer, parses the answer with ``httptools`` (the C parser uvicorn uses) and keeps the
connection for the next request. What the router relies on:

- one request at a time per connection, connections pooled per ``host:port`` and reused LIFO (the
  warmest first); idle ones are dropped before the runtime's own keep-alive timeout can race them;
- a connection that fails *before any byte of the answer* is :class:`UpstreamConnectionError`, the
  signal to retry on another endpoint; on a reused connection the request is first re-sent once on
  a fresh connection to the same endpoint, as Go's and browsers' transports do, because a runtime
  closing an idle keep-alive connection is not a fault of the endpoint;
- connect and whole-request timeouts (a request timeout is :class:`TimeoutError`, never retried).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools

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
    }
)


class UpstreamConnectionError(ConnectionError):
    """The backend could not be reached or dropped the connection before answering."""


@dataclass
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]  # lower-case names, hop-by-hop headers removed
    body: bytes
    keep_alive: bool


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a backend; at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._received = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"malformed answer from the backend: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._received:
                waiter.set_exception(UpstreamProtocolError("the backend closed the connection mid-answer"))
            else:
                reason = f": {exc}" if exc else ""
                waiter.set_exception(UpstreamConnectionError(f"connection closed before an answer{reason}"))

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        status = self._parser.get_status_code()
        keep_alive = self._parser.should_keep_alive()
        headers = [(k, v) for k, v in self._headers if k not in HOP_BY_HOP]
        waiter.set_result(UpstreamResponse(status, headers, b"".join(self._body), keep_alive))

    # -- use ----------------------------------------------------------------------------------------

    def send(self, data: bytes) -> asyncio.Future[UpstreamResponse]:
        assert self.transport is not None
        self._received = False
        self._headers = []
        self._body = []
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

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
        self._idle: dict[str, deque[_Connection]] = {}
        self._closed = False

    async def request(
        self,
        hostport: str,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout_s: float | None = None,
    ) -> UpstreamResponse:
        """Send and await the answer; raises UpstreamConnectionError (retry elsewhere) or TimeoutError."""
        data = encode_request(method, hostport, path, headers, body)
        async with asyncio.timeout(timeout_s if timeout_s is not None else self.request_timeout_s):
            connection = self._take_idle(hostport)
            if connection is not None:
                try:
                    return await self._exchange(hostport, connection, data)
                except UpstreamConnectionError:
                    pass  # a keep-alive connection the backend had closed: once more on a fresh one
            connection = await self._connect(hostport)
            return await self._exchange(hostport, connection, data)

    async def _exchange(self, hostport: str, connection: _Connection, data: bytes) -> UpstreamResponse:
        try:
            response = await connection.send(data)
        except BaseException:
            connection.close()  # cancelled, timed out or failed mid-exchange: never reuse it
            raise
        if response.keep_alive and not connection.closed and not self._closed:
            self._give_back(hostport, connection)
        else:
            connection.close()
        return response

    def _take_idle(self, hostport: str) -> _Connection | None:
        idle = self._idle.get(hostport)
        if not idle:
            return None
        oldest_usable = time.monotonic() - self.idle_timeout_s
        while idle:
            connection = idle.pop()
            if not connection.closed and connection.idle_since >= oldest_usable:
                return connection
            connection.close()
        return None

    def _give_back(self, hostport: str, connection: _Connection) -> None:
        idle = self._idle.setdefault(hostport, deque())
        if len(idle) >= self.max_idle_per_host:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _connect(self, hostport: str) -> _Connection:
        host, _, port = hostport.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, protocol = await loop.create_connection(_Connection, host.strip("[]"), int(port))
        except TimeoutError:
            raise UpstreamConnectionError(
                f"connect to {hostport} timed out after {self.connect_timeout_s:g}s"
            ) from None
        except OSError as exc:
            raise UpstreamConnectionError(f"cannot connect to {hostport}: {exc}") from exc
        return protocol

    def forget(self, hostport: str) -> None:
        """Close the idle connections to an endpoint that left the route table."""
        for connection in self._idle.pop(hostport, ()):
            connection.close()

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
