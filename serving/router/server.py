"""Run the router: the HTTP and gRPC front ends over one dispatcher, fed by a discovery source."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from modelplane.kube import KubeApi, load_connection
from modelplane.serving.heap import settle_heap
from modelplane.serving.router.activation import ActivationQueue
from modelplane.serving.router.dispatch import Dispatcher, DispatchSettings
from modelplane.serving.router.grpc_proxy import GrpcFrontEnd
from modelplane.serving.router.http_server import HttpServer
from modelplane.serving.router.kube_discovery import KubernetesDiscovery
from modelplane.serving.router.metrics import RouterMetrics
from modelplane.serving.router.proxy import HttpFrontEnd, HttpSettings
from modelplane.serving.router.routes import ModelRoute, RouteTable
from modelplane.serving.router.static_discovery import load_routes, watch_routes

log = logging.getLogger("modelplane.router")


@dataclass(frozen=True)
class RouterOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int | None = 8081
    discovery: str = "static"
    routes_file: Path | None = None
    default_namespace: str = "default"
    max_body_bytes: int = 64 * 1024 * 1024
    request_timeout_s: float = 120.0
    body_timeout_s: float = 30.0
    queue_size: int = 100
    queue_timeout_s: float = 60.0
    drain_timeout_s: float = 30.0
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


async def serve(options: RouterOptions, activate: Callable[[str], Awaitable[None]] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; on shutdown stop taking requests and let in-flight ones finish."""
    table = RouteTable()
    discovery: KubernetesDiscovery | None = None

    async def activate_model(model: str) -> None:
        if activate is not None:
            await activate(model)
        elif discovery is not None:
            await discovery.activate(model)
        else:
            log.info("model %s has no ready endpoint; static discovery cannot start it", model)

    activation = ActivationQueue(activate_model, options.queue_size, options.queue_timeout_s)
    metrics = RouterMetrics()
    dispatcher = Dispatcher(
        table, activation, metrics, DispatchSettings(default_namespace=options.default_namespace)
    )
    apply = apply_routes(table, activation)
    tasks: list[asyncio.Task[None]] = []
    kube: KubeApi | None = None
    if options.discovery == "static":
        if options.routes_file is None:
            raise ValueError("--discovery static needs --routes FILE")
        apply(load_routes(options.routes_file))  # fail fast on a bad file at start-up
        tasks.append(asyncio.create_task(watch_routes(options.routes_file, apply)))
    elif options.discovery == "kubernetes":
        kube = KubeApi(load_connection(), field_manager="modelplane-router")
        discovery = KubernetesDiscovery(kube, apply)
        tasks.append(asyncio.create_task(discovery.run()))
    else:
        raise ValueError(f"unknown discovery {options.discovery!r}: use static or kubernetes")

    http = HttpFrontEnd(
        dispatcher,
        HttpSettings(max_body_bytes=options.max_body_bytes, request_timeout_s=options.request_timeout_s),
    )
    http_server = HttpServer(
        http.handle,
        fast_handler=http.forward_fast,
        max_body_bytes=options.max_body_bytes,
        body_timeout_s=options.body_timeout_s,
    )
    grpc_front = GrpcFrontEnd(dispatcher, options.max_body_bytes, options.request_timeout_s)
    grpc_server: grpc.aio.Server | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await http_server.listen(options.host, options.port)
        if options.grpc_port is not None:
            grpc_server = grpc.aio.server(
                options=[
                    ("grpc.max_receive_message_length", options.max_body_bytes),
                    ("grpc.max_send_message_length", options.max_body_bytes),
                ]
            )
            grpc_server.add_generic_rpc_handlers((grpc_front.handler(),))
            grpc_server.add_insecure_port(f"{options.host}:{options.grpc_port}")
            await grpc_server.start()
        log.info(
            "router listening on %s:%s (HTTP) and %s (gRPC)", options.host, options.port, options.grpc_port
        )
        settle_heap()  # what start-up made lives as long as the process
        await stop.wait()
        http.draining = grpc_front.draining = True  # /readyz answers 503 from now on
        http_server.draining = True  # answers close their connections: clients reconnect elsewhere
        if options.drain_delay_s:
            log.info("stopping: not ready, still answering for %gs", options.drain_delay_s)
            await asyncio.sleep(options.drain_delay_s)
        log.info("stopping: draining requests in flight (up to %gs)", options.drain_timeout_s)
    finally:
        http.draining = grpc_front.draining = True
        drains = [http_server.drain(options.drain_timeout_s)]
        if grpc_server is not None:
            drains.append(grpc_server.stop(grace=options.drain_timeout_s))
        await asyncio.gather(*drains)
        await http.close()
        await grpc_front.close()
        for task in tasks:
            task.cancel()
        if kube is not None:
            await kube.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
