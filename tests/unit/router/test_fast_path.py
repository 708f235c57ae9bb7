"""The router's fast path: inferences forwarded from protocol callbacks, over real loopback sockets.

A POST for a ready model on a warm backend connection is forwarded without a task. What users rely
on is that it behaves as the task path does: the same counts (which balance and autoscale), and a
first attempt that is refused or answered 503 goes to another endpoint within the retry budget.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from modelplane.serving.router.activation import ActivationQueue
from modelplane.serving.router.balancing import Backend, Endpoint
from modelplane.serving.router.dispatch import Dispatcher
from modelplane.serving.router.http_server import HttpServer, Request
from modelplane.serving.router.metrics import RouterMetrics
from modelplane.serving.router.proxy import HttpFrontEnd
from modelplane.serving.router.routes import ModelRoute, RouteTable

INFER = b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: r\r\nContent-Length: 2\r\n\r\n{}"


class FakeRuntime:
    """A keep-alive runtime stand-in; ``mode`` says how it treats the next requests."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode = "ok"  # or "503", or "drop" (close without answering)
        self.served = 0
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                if self.mode == "drop":
                    break
                self.served += 1
                status, body = (
                    (b"503 Service Unavailable", b"busy")
                    if self.mode == "503"
                    else (b"200 OK", self.name.encode())
                )
                writer.write(b"HTTP/1.1 %b\r\nContent-Length: %d\r\n\r\n%b" % (status, len(body), body))
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def router(*names: str) -> AsyncIterator[tuple[int, HttpFrontEnd, list[bool], dict[str, FakeRuntime]]]:
    """Backends, a route to them, and the router's HTTP server with a spy on the fast path."""
    backends = {name: FakeRuntime(name) for name in names}
    servers = []
    for backend in backends.values():
        server = await asyncio.start_server(backend.serve, "127.0.0.1", 0)
        backend.port = server.sockets[0].getsockname()[1]
        servers.append(server)
    endpoints = [
        Endpoint(key=b.name, http=f"http://127.0.0.1:{b.port}", grpc=None) for b in backends.values()
    ]
    table = RouteTable({"iris": ModelRoute("iris", [Backend("1", 100)], {"1": endpoints})})

    async def never(model: str) -> None:
        raise AssertionError("no activation expected")

    front = HttpFrontEnd(Dispatcher(table, ActivationQueue(never, 10, 5), RouterMetrics()))
    taken: list[bool] = []

    def spy(request: Request, respond: object) -> bool:
        took = front.forward_fast(request, respond)  # type: ignore[arg-type]
        taken.append(took)
        return took

    http = HttpServer(front.handle, fast_handler=spy)
    await http.listen("127.0.0.1", 0)
    try:
        yield http.ports[0], front, taken, backends
    finally:
        await http.drain(1.0)
        await front.close()
        for server in servers:
            server.close()


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, bytes]:
    writer.write(INFER)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return int(head.split(b" ")[1]), await reader.readexactly(length)


async def test_warm_inferences_take_the_fast_path_and_leave_every_count_at_zero() -> None:
    async with router("a") as (port, front, taken, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = [await ask(reader, writer) for _ in range(3)]
        writer.close()
        assert answers == [(200, b"a")] * 3
        assert taken == [False, True, True]  # the first one dialled the backend; then it was warm
        metrics, route = front.metrics, front.dispatcher.table.routes["iris"]
        assert metrics.request_count("iris", "1", "200").value == 3
        assert metrics.model_in_flight("iris").value == 0
        assert metrics.model_concurrency("iris").level == 0
        assert route.endpoints["1"][0].outstanding == 0


async def test_a_fast_attempt_refused_or_answered_503_goes_to_the_other_endpoint() -> None:
    for failure in ("drop", "503"):
        async with router("a", "b") as (port, front, taken, backends):
            for backend in backends.values():  # warm a pooled connection to each
                response = await front.pool.request(f"127.0.0.1:{backend.port}", "POST", "/", [], b"{}")
                assert response.status == 200
            backends["a"].mode = failure
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            answers = [await ask(reader, writer) for _ in range(20)]  # a is picked half the time
            writer.close()
            assert answers == [(200, b"b")] * 20, failure
            assert any(taken), failure
            retried = front.metrics.retries.labels(model="iris")._value.get()
            assert retried >= 1, failure  # a reached at least once, then b answered
            assert front.metrics.model_in_flight("iris").value == 0


async def test_the_only_endpoint_answering_503_is_a_502_with_retry_after() -> None:
    async with router("a") as (port, front, taken, backends):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await ask(reader, writer) == (200, b"a")
        backends["a"].mode = "503"
        status, body = await ask(reader, writer)
        writer.close()
        assert taken == [False, True]
        assert status == 502
        assert b"no endpoint answered" in body
        assert front.metrics.request_count("iris", "", "502").value == 1
