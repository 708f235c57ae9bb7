"""Local discovery: the router embedded in ``modelplane up``, its routes pushed by the local supervisor.

On Kubernetes the router learns endpoints from EndpointSlices; on one machine the supervisor that
starts the runtime processes already knows them, so it hands complete route tables to
:meth:`LocalRouter.set_routes` and is called back (``activate``) when a request finds a model
scaled to zero. The router runs on the caller's event loop, so the caller owns signals and shutdown
order (stop taking requests, drain, then stop the runtimes).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable

import grpc
from prometheus_client import generate_latest

from modelplane.operator.autoscaler.metrics import ConcurrencyAverager, ModelLoad, Scrape, parse_router_page
from modelplane.serving.router.activation import ActivationQueue
from modelplane.serving.router.dispatch import Dispatcher, DispatchSettings
from modelplane.serving.router.grpc_proxy import GrpcFrontEnd
from modelplane.serving.router.http_server import HttpServer
from modelplane.serving.router.metrics import RouterMetrics
from modelplane.serving.router.proxy import HttpFrontEnd, HttpSettings
from modelplane.serving.router.routes import ModelRoute, RouteTable
from modelplane.serving.router.server import apply_routes


class LocalRouter:
    """The V2 router (HTTP and gRPC) with a route table set by code."""

    def __init__(
        self,
        http_socket: socket.socket,
        grpc_address: str,
        activate: Callable[[str], Awaitable[None]],
        *,
        queue_size: int = 100,
        queue_timeout_s: float = 60.0,
        request_timeout_s: float = 120.0,
        max_body_bytes: int = 64 * 1024 * 1024,
        drain_timeout_s: float = 10.0,
    ) -> None:
        self.table = RouteTable()
        self.metrics = RouterMetrics()
        self._averager = ConcurrencyAverager()
        self.activation = ActivationQueue(activate, queue_size, queue_timeout_s)
        self.dispatcher = Dispatcher(self.table, self.activation, self.metrics, DispatchSettings())
        self._apply = apply_routes(self.table, self.activation)
        self._http_socket = http_socket
        self._grpc_address = grpc_address
        self._max_body_bytes = max_body_bytes
        self._drain_timeout_s = drain_timeout_s
        self.http = HttpFrontEnd(
            self.dispatcher, HttpSettings(max_body_bytes=max_body_bytes, request_timeout_s=request_timeout_s)
        )
        self._http_server = HttpServer(
            self.http.handle, fast_handler=self.http.forward_fast, max_body_bytes=max_body_bytes
        )
        self.grpc_front = GrpcFrontEnd(self.dispatcher, max_body_bytes, request_timeout_s)
        self._grpc_server: grpc.aio.Server | None = None

    def set_routes(self, routes: dict[str, ModelRoute]) -> None:
        """Replace the whole table; waiting requests for models that became ready are released."""
        self._apply(routes)

    def loads(self) -> dict[str, ModelLoad]:
        """Requests per model, read the way the operator's autoscaler reads them.

        Each call yields the average concurrency since the previous call (the first call: the
        gauges), so the caller should call it once per autoscaling step.
        """
        page = parse_router_page(generate_latest(self.metrics.registry).decode())
        return self._averager.update({"local": Scrape(page, time.monotonic())})

    async def start(self) -> None:
        """Listen on both ports; raises OSError when the gRPC address cannot be bound."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max_body_bytes),
                ("grpc.max_send_message_length", self._max_body_bytes),
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers((self.grpc_front.handler(),))
        try:
            port = server.add_insecure_port(self._grpc_address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self._grpc_address}: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot listen on {self._grpc_address}")
        await server.start()
        self._grpc_server = server
        await self._http_server.listen(sock=self._http_socket)

    async def stop(self) -> None:
        """Refuse new requests, let in-flight ones finish (up to the drain timeout), close."""
        self.http.draining = self.grpc_front.draining = True
        await self._http_server.drain(self._drain_timeout_s)
        await self.http.close()
        if self._grpc_server is not None:
            await self._grpc_server.stop(grace=self._drain_timeout_s)
        await self.grpc_front.close()
