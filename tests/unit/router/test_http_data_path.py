"""The router's HTTP/1.1 server and backend pool over real loopback sockets.

What clients and runtimes rely on beyond routing: keep-alive, pipelining in order, 100-continue,
clear limits (413, 431, 408, 400) that close only the offending connection, reuse of backend
connections, and a transparent second attempt when a runtime closed an idle keep-alive connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from modelplane.serving.router.http_server import HttpServer, Request, Response, encode_response
from modelplane.serving.router.upstream import (
    UpstreamConnectionError,
    UpstreamPool,
    UpstreamProtocolError,
    encode_request,
)


async def echo(request: Request) -> Response:
    if request.path == "/slow":
        await asyncio.sleep(0.2)
    body = f"{request.method} {request.path} {request.query.decode()} {len(request.body)}".encode()
    return Response(200, body, [(b"content-type", b"text/plain")])


@contextlib.asynccontextmanager
async def serving(**limits: float) -> AsyncIterator[tuple[HttpServer, int]]:
    server = HttpServer(echo, **limits)  # type: ignore[arg-type]
    await server.listen("127.0.0.1", 0)
    try:
        yield server, server.ports[0]
    finally:
        await server.drain(1.0)


async def exchange(port: int, data: bytes, answers: int = 1) -> bytes:
    """Send raw bytes and read until `answers` complete responses or the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    received = b""
    try:
        async with asyncio.timeout(5):
            while received.count(b"HTTP/1.1 ") - received.count(b"HTTP/1.1 100") < answers:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received += chunk
            await asyncio.sleep(0.05)  # let the last body arrive
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    received += await reader.read(65536)
    finally:
        writer.close()
    return received


async def test_keep_alive_pipelining_answers_in_request_order() -> None:
    async with serving() as (_, port):
        requests = b"".join(
            f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in ("/slow", "/a?q=1", "/b")
        )
        answer = await exchange(port, requests, answers=3)
    bodies = [part.split(b"\r\n\r\n", 1)[1][:20] for part in answer.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert [b.split(b" ")[1] for b in bodies] == [b"/slow", b"/a", b"/b"]
    assert b"GET /a q=1 0" in answer


async def test_a_bad_request_behind_a_good_one_gets_its_error_after_the_good_answer() -> None:
    async with serving() as (_, port):
        answer = await exchange(port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nNOT-HTTP\r\n\r\n", answers=2)
    first, _, second = answer.partition(b"HTTP/1.1 400")
    assert first.startswith(b"HTTP/1.1 200 OK")
    assert b"GET /slow" in first
    assert b"malformed HTTP request" in second


async def test_expect_100_continue_then_the_answer() -> None:
    async with serving() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK")
        writer.close()


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n", b"413"),
        (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" + b"a" * 2000, b"413"),
        (b"GET /x HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n", b"431"),
        (b"GET /x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 70000 + b"\r\n\r\n", b"431"),
        (b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", b"400"),
        (b"NOT-HTTP\r\n\r\n", b"400"),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", b"405"),
        # A client still sending the body it was refused reads the 413, not a connection reset.
        (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n" + b"a" * 300000, b"413"),
    ],
    ids=[
        "too-large",
        "chunked-too-large",
        "header-count",
        "header-bytes",
        "bad-length",
        "junk",
        "connect",
        "refused-body-still-arriving",
    ],
)
async def test_bad_requests_get_a_clear_status_and_the_connection_closes(data: bytes, status: bytes) -> None:
    async with serving(max_body_bytes=1000) as (server, port):
        answer = await exchange(port, data)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert b"connection: close" in answer
        assert b'{"error": ' in answer
        # Other clients are unaffected.
        assert (await exchange(port, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 200")
        assert server.in_flight == 0


async def test_clients_offering_an_upgrade_are_answered_in_http_1_1() -> None:
    # Java's HttpClient and curl --http2 offer h2c on http:// URLs; they carry on in HTTP/1.1.
    offer = b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    offer += b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
    async with serving() as (_, port):
        answer = await exchange(port, offer + b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n", answers=2)
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert b"GET /a" in answer
    assert b"GET /b" in answer


async def test_a_client_that_does_not_read_stops_the_router_taking_its_next_requests() -> None:
    handled: list[str] = []

    async def big(request: Request) -> Response:
        handled.append(request.path)
        return Response(200, b"x" * (4 * 1024 * 1024))

    server = HttpServer(big)
    await server.listen("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0], limit=1)
    writer.write(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(20)))
    await asyncio.sleep(0.5)
    assert 1 <= len(handled) < 20  # unread answers do not pile up in the router
    received = 0
    async with asyncio.timeout(30):
        while received < 20 * 4 * 1024 * 1024:
            chunk = await reader.read(1 << 20)
            assert chunk
            received += len(chunk)
    assert len(handled) == 20
    writer.close()
    await server.drain(1.0)


def test_no_content_length_on_answers_that_cannot_have_a_body() -> None:
    assert b"content-length" not in encode_response(Response(204), keep_alive=True)
    assert b"content-length" not in encode_response(Response(304), keep_alive=True)
    assert b"content-length: 2\r\n" in encode_response(Response(200, b"ok"), keep_alive=True)


async def test_stalled_headers_and_bodies_get_408_and_idle_connections_close() -> None:
    async with serving(body_timeout_s=0.3, keep_alive_s=0.3) as (_, port):
        stalled_body = await exchange(port, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        stalled_head = await exchange(port, b"POST /x HTTP/1.1\r\nHost: x\r\n")
        assert stalled_body.startswith(b"HTTP/1.1 408")
        assert stalled_head.startswith(b"HTTP/1.1 408")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # idle: closed without a word
        writer.close()


async def test_drain_finishes_requests_in_flight_with_connection_close() -> None:
    server = HttpServer(echo)
    await server.listen("127.0.0.1", 0)
    port = server.ports[0]
    pending = asyncio.create_task(exchange(port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"))
    await asyncio.sleep(0.05)
    await server.drain(5.0)
    answer = await pending
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in answer
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_one_connection_answers_requests_one_after_another_and_leaves_nothing_behind() -> None:
    async with serving() as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(3):
            writer.write(f"GET /n/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert await reader.readexactly(length) == f"GET /n/{i}  0".encode()
        assert server.in_flight == 0
        writer.close()
        for _ in range(500):  # the client left: its connection goes away
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        assert not server.connections
        assert server.in_flight == 0


async def test_a_failing_fast_handler_answers_500_not_a_malformed_request() -> None:
    def broken(request: Request, respond: object) -> bool:
        raise RuntimeError("a bug")

    server = HttpServer(echo, fast_handler=broken)
    await server.listen("127.0.0.1", 0)
    try:
        answer = await exchange(
            server.ports[0], b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" * 2, 2
        )
    finally:
        await server.drain(1.0)
    assert answer.count(b"HTTP/1.1 500") == 2  # both answered, on the same connection
    assert b"internal router error" in answer


# -- the backend pool -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def backend(close_after_each: bool = False) -> AsyncIterator[tuple[int, list[int]]]:
    """A tiny keep-alive HTTP server; ``connections`` counts accepted connections."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                payload = head.split(b"\r\n")[0] + b"|" + body
                extra = b"Connection: close\r\n" if close_after_each else b""
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n" % (len(payload), extra)
                writer.write(head + payload)
                await writer.drain()
                if close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connections
    finally:
        server.close()


async def test_pool_reuses_connections_and_strips_hop_by_hop_headers() -> None:
    pool = UpstreamPool()
    async with backend() as (port, connections):
        for i in range(5):
            answer = await pool.request(
                f"127.0.0.1:{port}", "POST", f"/v2/models/m/infer?i={i}", [(b"connection", b"x")], b"{}"
            )
            assert answer.status == 200
            assert answer.body == f"POST /v2/models/m/infer?i={i} HTTP/1.1|{{}}".encode()
            assert all(name != b"content-length" for name, _ in answer.headers)
        assert len(connections) == 1
    await pool.close()


async def test_pool_resends_once_when_the_backend_closed_an_idle_connection() -> None:
    pool = UpstreamPool()
    async with backend(close_after_each=True) as (port, connections):
        for _ in range(3):
            assert (await pool.request(f"127.0.0.1:{port}", "GET", "/", [], b"")).status == 200
        assert len(connections) == 3
    await pool.close()


async def test_pool_errors_say_whether_a_retry_elsewhere_is_safe() -> None:
    pool = UpstreamPool(connect_timeout_s=1.0, request_timeout_s=0.3)
    with pytest.raises(UpstreamConnectionError, match="cannot connect"):
        await pool.request("127.0.0.1:1", "GET", "/", [], b"")

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)

    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    for handler, error in ((silent, TimeoutError), (half, UpstreamProtocolError)):
        async with answering(handler) as authority:
            with pytest.raises(error):
                await pool.request(authority, "GET", "/", [], b"")
    await pool.close()


@contextlib.asynccontextmanager
async def answering(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_an_abandoned_request_closes_its_backend_connection() -> None:
    """A request cancelled mid-flight (its client left) must not leave its connection in the pool,
    where the late answer would be read as the next request's."""
    pool = UpstreamPool(request_timeout_s=1.0)
    closed = asyncio.Event()
    accepted: list[int] = []

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if len(accepted) == 1:
                    await reader.read()  # never answers the first connection: waits for its close
                    closed.set()
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()

    async with answering(slow) as authority:
        pending = asyncio.ensure_future(pool.request(authority, "POST", "/", [], b""))
        await asyncio.sleep(0.1)
        pending.cancel()
        await asyncio.wait_for(closed.wait(), 5)  # closed by the pool's sweep, well before the timeout
        assert (await pool.request(authority, "POST", "/", [], b"")).body == b"ok"
        assert len(accepted) == 2
    await pool.close()


async def test_a_reused_connection_that_drops_a_request_resends_only_idempotent_methods() -> None:
    served: list[bytes] = []

    async def first_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answers the first request of each connection, then drops the connection on the second
        # without a word (a runtime that closed an idle keep-alive connection as it arrived).
        head = await reader.readuntil(b"\r\n\r\n")
        served.append(head.split(b" ")[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
        writer.close()

    pool = UpstreamPool()
    async with answering(first_only) as authority:
        assert (await pool.request(authority, "GET", "/", [], b"")).status == 200
        assert (await pool.request(authority, "GET", "/", [], b"")).status == 200  # re-sent afresh
        assert served == [b"GET", b"GET"]
        # The same drop for an inference: it is not silently run a second time on this endpoint;
        # the error lets the dispatcher decide (another endpoint, within the retry budget).
        with pytest.raises(UpstreamConnectionError):
            await pool.request(authority, "POST", "/infer", [], b"{}")
        assert (await pool.request(authority, "POST", "/infer", [], b"{}")).status == 200  # fresh
        assert served == [b"GET", b"GET", b"POST"]
    await pool.close()


async def test_interim_answers_are_skipped_and_close_delimited_answers_are_read_whole() -> None:
    async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
        await writer.drain()
        await asyncio.sleep(1)

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    pool = UpstreamPool()
    async with answering(early_hints) as authority:
        answer = await pool.request(authority, "GET", "/", [], b"")
        assert (answer.status, answer.body) == (200, b"final")
    async with answering(until_close) as authority:
        answer = await pool.request(authority, "GET", "/", [], b"")
        assert (answer.status, answer.body, answer.keep_alive) == (200, b"all of it", False)
    assert pool.idle_connections <= 1
    await pool.close()


def test_encoded_requests_carry_our_host_and_length_only() -> None:
    data = encode_request(
        "POST", "10.0.0.1:8000", "/p", [(b"host", b"evil"), (b"content-length", b"1"), (b"x-a", b"1")], b"ab"
    )
    assert data == b"POST /p HTTP/1.1\r\nhost: 10.0.0.1:8000\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nab"
