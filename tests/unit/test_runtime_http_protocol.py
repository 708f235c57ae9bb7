"""The runtime's HTTP protocol sends each answer in one write, and otherwise behaves as uvicorn's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
import uvicorn

from modelplane.serving.runtime.http_protocol import JOIN_LIMIT, CorkedHttpToolsProtocol, CorkedTransport


class RecordingTransport:
    """Stands in for a socket transport: records what reaches it, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", b""))

    def abort(self) -> None:
        self.closing = True
        self.calls.append(("abort", b""))

    def write_eof(self) -> None:
        self.calls.append(("eof", b""))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else default


def corked() -> tuple[CorkedTransport, RecordingTransport]:
    real = RecordingTransport()
    return CorkedTransport(real, asyncio.get_running_loop()), real  # type: ignore[arg-type]


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


async def test_a_head_and_its_body_leave_as_one_write_as_soon_as_the_body_is_written() -> None:
    transport, real = corked()
    transport.write(HEAD)
    assert real.calls == []
    transport.write(memoryview(b"ok"))
    assert real.calls == [("write", HEAD + b"ok")]  # not held to the end of the pass
    await asyncio.sleep(0)
    assert real.calls == [("write", HEAD + b"ok")]  # and nothing more when the pass ends


async def test_a_large_body_follows_its_head_in_a_write_of_its_own() -> None:
    transport, real = corked()
    body = b"x" * (JOIN_LIMIT + 1)
    transport.write(HEAD)
    transport.write(body)
    assert real.calls == [("write", HEAD), ("write", body)]
    assert real.calls[1][1] is body  # in order, and the body not copied


async def test_a_head_with_an_empty_body_leaves_at_once() -> None:
    transport, real = corked()
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    transport.write(b"")  # uvicorn writes the empty body of a content-length: 0 answer
    assert real.calls == [("write", b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")]


async def test_a_head_without_a_body_is_not_held_past_the_pass() -> None:
    transport, real = corked()
    transport.write(HEAD)  # a HEAD answer: uvicorn writes no body
    await asyncio.sleep(0)
    assert real.calls == [("write", HEAD)]


async def test_writes_that_end_no_head_go_straight_through() -> None:
    transport, real = corked()
    transport.write(b"5\r\nchunk\r\n")
    transport.write(b"5\r\nmore!\r\n")
    assert real.calls == [("write", b"5\r\nchunk\r\n"), ("write", b"5\r\nmore!\r\n")]


async def test_close_and_eof_send_what_is_held_first() -> None:
    transport, real = corked()
    transport.write(HEAD)
    transport.write_eof()
    transport.close()
    assert real.calls == [("write", HEAD), ("eof", b""), ("close", b"")]
    await asyncio.sleep(0)  # the scheduled pass-end flush finds nothing more to send
    assert len(real.calls) == 3


async def test_abort_drops_what_was_not_sent() -> None:
    transport, real = corked()
    transport.write(HEAD)
    transport.abort()
    await asyncio.sleep(0)
    assert real.calls == [("abort", b"")]


async def test_writes_to_a_closing_transport_are_dropped_as_the_real_one_does() -> None:
    transport, real = corked()
    real.closing = True
    transport.write(HEAD)
    transport.write(b"late")
    await asyncio.sleep(0)
    assert real.calls == []


async def test_buffer_size_counts_what_is_held() -> None:
    transport, real = corked()
    real.buffered = 10
    transport.write(HEAD)
    assert transport.get_write_buffer_size() == 10 + len(HEAD)
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)  # the rest is the real one's


# -- a real uvicorn server ---------------------------------------------------------------------------


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the request's method and body, sending as the runtime's app does: start, body."""
    body = scope["method"].encode() + b" "
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


class WriteRecorder:
    """Wraps the socket transport and records each write that reaches it."""

    writes: ClassVar[list[bytes]] = []

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WriteRecorder.writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RecordingProtocol(CorkedHttpToolsProtocol):
    """The runtime's protocol, over a transport that records the writes reaching the socket."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(WriteRecorder(transport))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def server() -> AsyncIterator[int]:
    WriteRecorder.writes.clear()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=RecordingProtocol,
        loop="none",
        lifespan="off",
        log_level="warning",
    )
    instance = uvicorn.Server(config)
    sock = config.bind_socket()
    task = asyncio.create_task(instance.serve(sockets=[sock]))
    while not instance.started:  # noqa: ASYNC110 - uvicorn reports start-up only as a flag
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        instance.should_exit = True
        await task


async def read_answer(reader: asyncio.StreamReader, head_only: bool = False) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
    body = b"" if head_only else await asyncio.wait_for(reader.readexactly(length), 5)
    return lines[0], body


OK = b"HTTP/1.1 200 OK"


async def test_each_answer_leaves_in_one_write() -> None:
    bodies = [b"one", b"two", b"three"]
    async with server() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for body in bodies:
            writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            assert await read_answer(reader) == (OK, b"POST " + body)
        writer.close()
    assert len(WriteRecorder.writes) == len(bodies)  # uvicorn alone writes a head, then a body
    for write, body in zip(WriteRecorder.writes, bodies, strict=True):
        assert write.startswith(OK + b"\r\n")
        assert write.endswith(b"\r\n\r\nPOST " + body)


async def test_pipelined_requests_are_answered_in_order_and_close_is_honoured() -> None:
    async with server() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\na"
            b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
            b"POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 1\r\n\r\nb"
        )
        assert [await read_answer(reader) for _ in range(3)] == [
            (OK, b"POST a"),
            (OK, b"GET "),
            (OK, b"POST b"),
        ]
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the last answer
        writer.close()


async def test_a_head_answer_is_sent_without_waiting_for_a_body() -> None:
    async with server() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n")  # keep-alive: nothing closes to flush it
        assert await read_answer(reader, head_only=True) == (OK, b"")
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nc")
        assert await read_answer(reader) == (OK, b"POST c")  # and nothing of the HEAD's body came
        writer.close()


@pytest.mark.parametrize("size", [1, 256 * 1024])
async def test_bodies_of_any_size_arrive_whole(size: int) -> None:
    body = b"x" * size
    async with server() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % size + body)
        assert await read_answer(reader) == (OK, b"POST " + body)
        writer.close()
