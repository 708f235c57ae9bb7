"""Process lifetime: start the HTTP, gRPC and metrics listeners, load models, drain on SIGTERM.

Live as soon as the listeners are up; ready once every model has loaded and warmed up. SIGTERM
(or SIGINT) makes the server not ready; it keeps answering for the drain delay (default 0), then
answers new inference requests with 503, waits for the requests in flight (bounded by the drain
timeout), closes the listeners and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import uvicorn
from prometheus_client import start_http_server

from modelplane.serving.runtime.grpc_service import InferenceServicer, create_server
from modelplane.serving.runtime.http_app import DEFAULT_MAX_BODY_BYTES, HttpApp
from modelplane.serving.runtime.http_protocol import CorkedHttpToolsProtocol
from modelplane.serving.runtime.lifecycle import Lifecycle
from modelplane.serving.runtime.metrics import RuntimeMetrics
from modelplane.serving.runtime.models import ModelManager
from modelplane.serving.runtime.shared_memory import SharedMemoryRegistry

log = logging.getLogger("modelplane.runtime")


@dataclass(frozen=True)
class RuntimeOptions:
    model_repository: Path
    host: str = "0.0.0.0"  # noqa: S104 (a serving pod listens on its pod IP)
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    threads: int | None = None
    interop_threads: int | None = None
    drain_timeout_s: float = 30.0
    #: After SIGTERM, report not ready but keep answering every request this long before refusing
    #: new ones, so that EndpointSlices, proxies and load balancers stop sending first (the
    #: "lame duck" period; in Kubernetes it covers endpoint propagation during rollouts).
    drain_delay_s: float = 0.0
    cache_dir: Path | None = None


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: this module decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(options: RuntimeOptions) -> None:
    """Run until SIGTERM/SIGINT, then drain and return."""
    if options.threads:
        torch.set_num_threads(options.threads)
    if options.interop_threads:
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(options.interop_threads)
    cache_dir = options.cache_dir or options.model_repository / ".cache"
    metrics = RuntimeMetrics()
    lifecycle = Lifecycle()
    manager = ModelManager(options.model_repository, cache_dir, metrics)

    shared_memory = SharedMemoryRegistry()  # system shared memory regions, one set for both protocols
    app = HttpApp(manager, metrics, lifecycle, options.max_body_bytes, shared_memory)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.http_port,
        http=CorkedHttpToolsProtocol,  # uvicorn's httptools protocol, an answer in one write
        loop="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
        ws="none",
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=75,
        backlog=2048,
    )
    http_server = _HttpServer(config)
    grpc_server, grpc_port = create_server(
        InferenceServicer(manager, metrics, lifecycle, shared_memory),
        f"{options.host}:{options.grpc_port}",
        options.max_body_bytes,
    )
    if grpc_port == 0:
        raise SystemExit(f"cannot listen for gRPC on {options.host}:{options.grpc_port}")
    await grpc_server.start()
    metrics_server: Any = None
    if options.metrics_port is not None:
        metrics_server, _ = start_http_server(
            options.metrics_port, addr=options.host, registry=metrics.registry
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    http_task = asyncio.create_task(http_server.serve(), name="http")
    load_task = asyncio.create_task(manager.load_all(), name="load-models")
    stop_task = asyncio.create_task(stop.wait(), name="stop")
    log.info(
        "modelplane runtime: HTTP on %s:%d, gRPC on %s:%d, repository %s",
        options.host,
        options.http_port,
        options.host,
        grpc_port,
        options.model_repository,
    )
    await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    if http_task.done():  # the HTTP listener could not start (port taken, ...)
        stop_task.cancel()
        await grpc_server.stop(0)
        await manager.close()
        shared_memory.close()
        raise SystemExit(f"the HTTP server stopped: cannot serve on {options.host}:{options.http_port}")

    if options.drain_delay_s > 0:
        log.info("leaving: not ready, still serving for %.1f s", options.drain_delay_s)
        lifecycle.leave()
        await asyncio.sleep(options.drain_delay_s)
    log.info("draining: %d requests in flight", lifecycle.inflight)
    finished = await lifecycle.drain(options.drain_timeout_s)
    if not finished:
        log.error("drain timeout: %d requests still in flight", lifecycle.inflight)
    load_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await load_task
    http_server.should_exit = True
    await grpc_server.stop(grace=1.0)
    await http_task
    if metrics_server is not None:
        metrics_server.shutdown()
    await manager.close()
    shared_memory.close()  # unregister every region: close their descriptors and mappings
    log.info("stopped")


def run(options: RuntimeOptions) -> None:
    """Blocking entry point (uvloop when installed)."""
    # INFO and up, whatever was set before: a root handler that an import added would otherwise
    # make this a no-op and leave the default, WARNING (a start, a drain are news, not warnings).
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(options))
    else:
        uvloop.run(serve(options))
