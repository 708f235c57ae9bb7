"""Streamed answers over real loopback sockets: the router's server writes each piece as it comes
(chunked), and its streaming backend client hands each piece on as the backend sends it; either
side leaving closes the other."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from modelplane.serving.router.http_server import HttpServer, Request, Response, StreamingResponse
from modelplane.serving.router.stream_upstream import StreamPool
from modelplane.serving.router.upstream import UpstreamConnectionError


class QueueStream:
    """A body the test feeds piece by piece (b"" ends it)."""

    def __init__(self) -> None:
        self.pieces: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def read(self) -> bytes:
        return await self.pieces.get()

    def close(self) -> None:
        self.closed.set()


@contextlib.asynccontextmanager
async def streaming_server(stream: QueueStream) -> AsyncIterator[int]:
    async def handler(request: Request) -> Response:
        if request.path == "/plain":
            return Response(200, b"plain", [])
        return StreamingResponse(200, [(b"content-type", b"text/event-stream")], stream)

    server = HttpServer(handler)
    await server.listen("127.0.0.1", 0)
    try:
        yield server.ports[0]
    finally:
        await server.drain(1.0)


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    received = b""
    async with asyncio.timeout(5):
        while marker not in received:
            chunk = await reader.read(65536)
            assert chunk, f"closed before {marker!r}: {received!r}"
            received += chunk
    return received


async def test_each_piece_is_written_as_it_arrives_then_the_connection_is_kept() -> None:
    stream = QueueStream()
    async with streaming_server(stream) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        await stream.pieces.put(b"data: one\n\n")
        first = await read_until(reader, b"data: one\n\n")  # while the body is still open
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"transfer-encoding: chunked\r\n" in first
        assert b"content-length" not in first
        await stream.pieces.put(b"data: two\n\n")
        await stream.pieces.put(b"")
        rest = await read_until(reader, b"0\r\n\r\n")
        assert rest == b"b\r\ndata: two\n\n\r\n0\r\n\r\n"
        assert stream.closed.is_set()
        writer.write(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection goes on
        assert (await read_until(reader, b"plain")).startswith(b"HTTP/1.1 200 OK")
        writer.close()


async def test_a_client_that_leaves_closes_the_stream() -> None:
    stream = QueueStream()
    async with streaming_server(stream) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        await stream.pieces.put(b"data: one\n\n")
        await read_until(reader, b"data: one")
        writer.close()
        await asyncio.wait_for(stream.closed.wait(), timeout=5)


async def test_a_body_that_breaks_off_ends_the_connection_without_the_last_chunk() -> None:
    class Broken(QueueStream):
        async def read(self) -> bytes:
            piece = await super().read()
            if piece == b"boom":
                raise ConnectionResetError("the backend went away")
            return piece

    stream = Broken()
    async with streaming_server(stream) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        await stream.pieces.put(b"data: one\n\n")
        await stream.pieces.put(b"boom")
        async with asyncio.timeout(5):
            received = await reader.read(-1)  # to the close
        assert b"data: one" in received
        assert not received.endswith(b"0\r\n\r\n")
        writer.close()


# -- the streaming backend client ----------------------------------------------------------------------


class Backend:
    """A raw backend: answers a chunked stream, one piece now and the rest on ``go``."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.client_left = asyncio.Event()
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                await writer.drain()
                if b"/wait" in head:
                    waiter = asyncio.ensure_future(self.go.wait())
                    left = asyncio.ensure_future(reader.read(1))
                    done, _ = await asyncio.wait({waiter, left}, return_when=asyncio.FIRST_COMPLETED)
                    if left in done:
                        waiter.cancel()
                        self.client_left.set()
                        return
                    left.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await left
                writer.write(b"4\r\nlast\r\n0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.client_left.set()
        finally:
            writer.close()


@pytest.fixture
async def backend() -> AsyncIterator[tuple[Backend, str]]:
    fake = Backend()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        server.close()
        for writer in fake.writers:
            writer.close()
        await asyncio.sleep(0.01)  # let the handlers see their connections end


async def test_the_client_hands_on_each_piece_as_the_backend_sends_it(backend: tuple[Backend, str]) -> None:
    fake, hostport = backend
    pool = StreamPool(read_timeout_s=5)
    answer = await pool.open(hostport, "POST", "/wait", [], b"{}")
    assert answer.status == 200
    assert answer.chunked
    assert await answer.read() == b"first"  # the backend still waits for `go`
    fake.go.set()
    assert await answer.read_all(1000) == b"last"
    answer.close()
    again = await pool.open(hostport, "POST", "/now", [], b"{}")  # the kept connection is reused
    assert await again.read_all(1000) == b"firstlast"
    again.close()
    assert fake.connections == 1
    await pool.close()


async def test_closing_an_unfinished_answer_closes_the_backends_connection(
    backend: tuple[Backend, str],
) -> None:
    fake, hostport = backend
    pool = StreamPool(read_timeout_s=5)
    answer = await pool.open(hostport, "POST", "/wait", [], b"{}")
    assert await answer.read() == b"first"
    answer.close()
    await asyncio.wait_for(fake.client_left.wait(), timeout=5)
    await pool.close()


async def test_a_backend_that_cannot_be_reached_is_a_connection_error() -> None:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(UpstreamConnectionError):
            await StreamPool().open(f"127.0.0.1:{port}", "POST", "/v1/completions", [], b"{}")
