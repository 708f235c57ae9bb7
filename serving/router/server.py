"""The router: HTTP and gRPC front ends over one dispatcher, fed by a discovery source.

:class:`Router` is assembled the same way whatever tells it its routes (a file, Kubernetes, or the
local stack pushing tables); :func:`serve` is the ``modelplane router`` process around it:
options, signals, and the drain on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from modelplane.api.metrics import LoadReport
from modelplane.kube import KubeApi, load_connection
from modelplane.serving.heap import settle_heap
from modelplane.serving.router.activation import ActivationQueue
from modelplane.serving.router.discovery import Discovery
from modelplane.serving.router.dispatch import Dispatcher, DispatchSettings
from modelplane.serving.router.grpc_proxy import GrpcFrontEnd
from modelplane.serving.router.http_server import HttpServer
from modelplane.serving.router.kube_discovery import KubernetesDiscovery
from modelplane.serving.router.load_scraper import LoadScraper
from modelplane.serving.router.metrics import RouterMetrics
from modelplane.serving.router.openai_proxy import OpenAIFrontEnd, OpenAISettings
from modelplane.serving.router.proxy import HttpFrontEnd, HttpSettings
from modelplane.serving.router.routes import ModelRoute, RouteTable
from modelplane.serving.router.static_discovery import StaticDiscovery

log = logging.getLogger("modelplane.router")


@dataclass(frozen=True)
class RouterSettings:
    """The limits and timeouts of the data path."""

    default_namespace: str = "default"
    max_body_bytes: int = 64 * 1024 * 1024
    request_timeout_s: float = 120.0
    body_timeout_s: float = 30.0
    queue_size: int = 100
    queue_timeout_s: float = 60.0
    drain_timeout_s: float = 30.0
    load_scrape_interval_s: float = 1.0  # generative endpoints' /metrics, for least-loaded balancing
    load_scrape_timeout_s: float = 0.5
    prefix_chars: int = 256  # how much of a prompt decides prefix affinity


@dataclass(frozen=True)
class RouterOptions:
    """``modelplane router``'s options: where to listen, where routes come from, the data path."""

    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int | None = 8081
    discovery: str = "static"
    routes_file: Path | None = None
    settings: RouterSettings = RouterSettings()
    drain_delay_s: float = 0.0  # lame duck: not ready, still answering, before refusing connections


def apply_routes(table: RouteTable, activation: ActivationQueue) -> Callable[[dict[str, ModelRoute]], None]:
    """Swap routes into the table and release requests waiting for models that became ready."""

    def apply(routes: dict[str, ModelRoute]) -> None:
        for name in table.replace(routes):
            activation.endpoints_ready(name)
        for name, route in table.routes.items():
            if not route.ready():
                activation.endpoints_gone(name)

    return apply


class Router:
    """The V2 router (HTTP and gRPC), and the OpenAI API's (``/v1``), over one discovery source."""

    def __init__(self, discovery: Discovery, settings: RouterSettings | None = None) -> None:
        self.discovery = discovery
        self.settings = settings = settings or RouterSettings()
        self.table = RouteTable()
        self.metrics = RouterMetrics()
        self.activation = ActivationQueue(discovery.activate, settings.queue_size, settings.queue_timeout_s)
        self.dispatcher = Dispatcher(
            self.table,
            self.activation,
            self.metrics,
            DispatchSettings(default_namespace=settings.default_namespace),
        )
        self.apply = apply_routes(self.table, self.activation)
        self.openai = OpenAIFrontEnd(
            self.dispatcher,
            OpenAISettings(
                default_namespace=settings.default_namespace,
                max_body_bytes=settings.max_body_bytes,
                request_timeout_s=settings.request_timeout_s,
                prefix_chars=settings.prefix_chars,
            ),
        )
        self.load = LoadScraper(
            self.table,
            settings.load_scrape_interval_s,
            settings.load_scrape_timeout_s,
            registry=self.metrics.registry,
        )
        self.http = HttpFrontEnd(
            self.dispatcher,
            HttpSettings(
                max_body_bytes=settings.max_body_bytes, request_timeout_s=settings.request_timeout_s
            ),
            fallback=self.openai.handle,
        )
        self.http_server = HttpServer(
            self.http.handle,
            fast_handler=self.http.forward_fast,
            max_body_bytes=settings.max_body_bytes,
            body_timeout_s=settings.body_timeout_s,
        )
        self.grpc_front = GrpcFrontEnd(
            self.dispatcher,
            settings.max_body_bytes,
            settings.request_timeout_s,
            statistics=self.http.statistics,  # one pool for both front ends' statistics requests
        )
        self._grpc_server: grpc.aio.Server | None = None

    def load_report(self) -> LoadReport:
        """Requests per model now, typed: what the load metrics on ``/metrics`` say."""
        waiting, running = self.load.engine_load(time.monotonic())
        return replace(self.metrics.load_report(), engine_waiting=waiting, engine_running=running)

    async def start(
        self,
        *,
        http_socket: socket.socket | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        grpc_address: str | None = None,
    ) -> None:
        """Follow the discovery source and listen: on ``http_socket`` if given, else ``host:port``.

        Raises what the discovery source raises when it is unusable, and OSError when a port cannot
        be bound (the gRPC port is never shared with another process).
        """
        await self.discovery.start(self.apply)
        self.load.start()
        if http_socket is not None:
            await self.http_server.listen(sock=http_socket)
        else:
            await self.http_server.listen(host, port)
        if grpc_address is not None:
            self._grpc_server = await self._start_grpc(grpc_address)

    async def _start_grpc(self, address: str) -> grpc.aio.Server:
        limit = self.settings.max_body_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers((self.grpc_front.handler(),))
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        await server.start()
        return server

    @property
    def http_ports(self) -> list[int]:
        return self.http_server.ports

    async def stop(self, drain_delay_s: float = 0.0) -> None:
        """Report not ready, keep answering ``drain_delay_s``, then let requests in flight finish.

        Requests still running after the drain timeout are cut; the discovery source stops last.
        """
        self.http.draining = self.grpc_front.draining = True  # /readyz answers 503 from now on
        self.http_server.draining = True  # answers close their connections: clients reconnect elsewhere
        if drain_delay_s:
            log.info("stopping: not ready, still answering for %gs", drain_delay_s)
            await asyncio.sleep(drain_delay_s)
        timeout = self.settings.drain_timeout_s
        log.info("stopping: draining requests in flight (up to %gs)", timeout)
        drains = [self.http_server.drain(timeout)]
        if self._grpc_server is not None:
            drains.append(self._grpc_server.stop(grace=timeout))
        await asyncio.gather(*drains)
        await self.http.close()
        await self.openai.close()
        await self.load.stop()
        await self.grpc_front.close()
        await self.discovery.stop()


def discovery_for(options: RouterOptions) -> Discovery:
    """The discovery source ``--discovery`` names."""
    if options.discovery == "static":
        if options.routes_file is None:
            raise ValueError("--discovery static needs --routes FILE")
        return StaticDiscovery(options.routes_file)
    if options.discovery == "kubernetes":
        return KubernetesDiscovery(KubeApi(load_connection(), field_manager="modelplane-router"))
    raise ValueError(f"unknown discovery {options.discovery!r}: use static or kubernetes")


async def serve(options: RouterOptions) -> None:
    """Serve until SIGTERM/SIGINT; on shutdown stop taking requests and let in-flight ones finish."""
    router = Router(discovery_for(options), options.settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    grpc_address = None if options.grpc_port is None else f"{options.host}:{options.grpc_port}"
    try:
        await router.start(host=options.host, port=options.port, grpc_address=grpc_address)
        log.info(
            "router listening on %s:%s (HTTP) and %s (gRPC)", options.host, options.port, options.grpc_port
        )
        settle_heap()  # what start-up made lives as long as the process
        await stop.wait()
        await router.stop(options.drain_delay_s)
    finally:
        if not router.http.draining:  # start-up failed half way: release what did start
            await router.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
