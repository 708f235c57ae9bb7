"""Streamed exchanges with backends: the answer's head as soon as it arrives, then its body piece by
piece, for answers that must not be buffered (server-sent events of a generation).

:class:`StreamPool` keeps keep-alive connections per ``host:port`` (one exchange at a time each,
reused LIFO, dropped after ``idle_timeout_s``, shorter than a runtime's own keep-alive so the two
cannot race). :meth:`StreamPool.open` sends a request and returns an :class:`UpstreamStream` once
the head is in: its :meth:`~UpstreamStream.read` gives each body piece as the backend sends it.
What callers rely on:

- a failure *before any byte of the answer* is :class:`UpstreamConnectionError` (the dispatcher
  may retry elsewhere); on a reused connection the request is first sent once more on a fresh
  one, since a runtime closing an idle keep-alive connection is no fault (nothing was processed);
- a body that breaks off midway is :class:`UpstreamProtocolError`; no answer head, or a silence
  between pieces, longer than ``read_timeout_s`` is :class:`TimeoutError`;
- :meth:`UpstreamStream.close` before the end closes the connection at once, which is how a
  runtime learns that its client left (it aborts the generation);
- a client that reads slowly slows the backend (reading from it pauses while more than
  ``HIGH_WATER`` bytes wait), instead of growing the router's memory.

This module is interpreted, not compiled (the ``/v1`` data path is dominated by generation).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from typing import cast

import httptools

from modelplane.serving.router.upstream import (
    HOP_BY_HOP,
    UpstreamConnectionError,
    UpstreamProtocolError,
    encode_request,
)

HIGH_WATER = 256 * 1024  # bytes read from a backend and not yet taken: pause reading above this
LOW_WATER = 64 * 1024


class _StreamConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.hostport = ""
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self.received = False
        self._interim = False
        self._paused = False
        self._wakeup: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.complete or self.error is not None:
            self.close()  # bytes nobody asked for
            return
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"malformed answer from the backend: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.head.done():
            if self.received:
                self.head.set_exception(UpstreamProtocolError("the backend closed the connection mid-answer"))
            else:
                reason = f": {exc}" if exc else ""
                self.head.set_exception(
                    UpstreamConnectionError(f"connection closed before an answer{reason}")
                )
        elif not self.complete and self.error is None:
            if any(k in (b"content-length", b"transfer-encoding") for k, _ in self.headers):
                self.error = UpstreamProtocolError("the backend closed the connection mid-answer")
            else:
                self.complete = True  # an answer delimited by the close
        self._wake()

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # interim (100 Continue): wait for the real head
            self._interim = True
            return
        self.status = status
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self.headers = []
            return
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # -- use ----------------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if not self.head.done():
            self.head.set_exception(exc)
        else:
            self.error = exc
        self._wake()
        self.close()

    def start(self, data: bytes) -> None:
        assert self.transport is not None
        self._reset()
        self.transport.write(data)

    async def next_chunk(self, timeout_s: float) -> bytes:
        """The next body piece, b"" at the end; raises on a broken answer or a silence."""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self._paused and self.buffered < LOW_WATER and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return chunk
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            if self.closed:
                raise UpstreamProtocolError("the backend closed the connection mid-answer")
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._wakeup
            finally:
                self._wakeup = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamStream:
    """One answer being received: ``status`` and ``headers`` (hop-by-hop ones removed) now, the body
    through :meth:`read`. :meth:`close` it in every case (it returns a finished connection to the
    pool and closes an unfinished one)."""

    def __init__(self, pool: StreamPool, connection: _StreamConnection) -> None:
        self._pool = pool
        self._connection: _StreamConnection | None = connection
        self.status = connection.status
        self.headers = [(k, v) for k, v in connection.headers if k not in HOP_BY_HOP]
        self.chunked = not any(k == b"content-length" for k, _ in connection.headers)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def read(self) -> bytes:
        """The next piece of the body as the backend sent it; b"" at the end."""
        connection = self._connection
        if connection is None:
            return b""
        return await connection.next_chunk(self._pool.read_timeout_s)

    async def read_all(self, limit: int) -> bytes:
        """The rest of the body (at most ``limit`` bytes: more is UpstreamProtocolError)."""
        parts: list[bytes] = []
        size = 0
        while chunk := await self.read():
            size += len(chunk)
            if size > limit:
                raise UpstreamProtocolError(f"the backend's answer exceeds {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if connection.complete and connection.keep_alive and not connection.closed and not connection.chunks:
            self._pool.give_back(connection)
        else:
            connection.close()  # unfinished: the backend sees its client leave


class StreamPool:
    """Keep-alive connections for streamed exchanges, per ``host:port``."""

    def __init__(
        self,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 120.0,
        idle_timeout_s: float = 4.0,
        max_idle_per_host: int = 64,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[str, deque[_StreamConnection]] = {}
        self.connections_made = 0

    async def open(
        self,
        hostport: str,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        head_timeout_s: float | None = None,
    ) -> UpstreamStream:
        """Send the request; return once the answer's head is in (see the module's errors)."""
        data = encode_request(method, hostport, path, headers, body)
        timeout = self.read_timeout_s if head_timeout_s is None else head_timeout_s
        reused = self._take_idle(hostport)
        if reused is not None:
            try:
                return await self._exchange(reused, data, timeout)
            except UpstreamConnectionError:
                pass  # most likely a keep-alive connection the backend had just closed: once more, fresh
        connection = await self._connect(hostport)
        return await self._exchange(connection, data, timeout)

    async def _exchange(self, connection: _StreamConnection, data: bytes, timeout_s: float) -> UpstreamStream:
        connection.start(data)
        try:
            async with asyncio.timeout(timeout_s):
                await connection.head
        except BaseException:  # a timeout, a cancelled request (its client left), a failure
            connection.close()
            raise
        return UpstreamStream(self, connection)

    async def _connect(self, hostport: str) -> _StreamConnection:
        host, _, port = hostport.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, protocol = await loop.create_connection(_StreamConnection, host.strip("[]"), int(port))
        except TimeoutError:
            raise UpstreamConnectionError(
                f"connect to {hostport} timed out after {self.connect_timeout_s:g}s"
            ) from None
        except OSError as exc:
            raise UpstreamConnectionError(f"cannot connect to {hostport}: {exc}") from exc
        protocol.hostport = hostport
        self.connections_made += 1
        return protocol

    def _take_idle(self, hostport: str) -> _StreamConnection | None:
        idle = self._idle.get(hostport)
        oldest_usable = time.monotonic() - self.idle_timeout_s
        while idle:
            connection = idle.pop()
            if not connection.closed and connection.idle_since >= oldest_usable:
                return connection
            connection.close()
        return None

    def give_back(self, connection: _StreamConnection) -> None:
        idle = self._idle.setdefault(connection.hostport, deque())
        oldest_usable = time.monotonic() - self.idle_timeout_s
        while idle and (idle[0].closed or idle[0].idle_since < oldest_usable):
            idle.popleft().close()
        if len(idle) >= self.max_idle_per_host:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
