"""``modelplane llm-runtime``: one generative model over the OpenAI API, from load to drain.

Live as soon as the listener is up; ready once the engine has loaded the weights (the engine loads
them on its own thread, so health checks answer meanwhile). SIGTERM (or SIGINT) makes the server
not ready; it keeps serving for the drain delay, then stops accepting connections and lets the
requests in flight finish (streams included) within the drain timeout, then stops the engine,
which ends whatever still runs with ``finish_reason="abort"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Generator
from dataclasses import dataclass

import uvicorn

from modelplane.serving.runtime.generative.api import DEFAULT_MAX_BODY_BYTES, create_app
from modelplane.serving.runtime.generative.config import EngineConfig
from modelplane.serving.runtime.generative.engine import LLMEngine
from modelplane.serving.runtime.generative.state import AppState

log = logging.getLogger("modelplane.llm-runtime")


@dataclass(frozen=True)
class LlmRuntimeOptions:
    engine: EngineConfig
    served_model_name: str
    host: str = "0.0.0.0"  # noqa: S104 (a serving pod listens on its pod IP)
    port: int = 8000
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    drain_timeout_s: float = 30.0
    drain_delay_s: float = 0.0  # not ready, still serving, before refusing connections (lame duck)


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: :func:`serve` decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(options: LlmRuntimeOptions) -> None:
    """Run until SIGTERM/SIGINT, then drain and return."""
    engine = LLMEngine(options.engine)  # reads the config and tokenizer: a bad directory fails here
    engine.start()
    app = create_app({options.served_model_name: engine}, max_body_bytes=options.max_body_bytes)
    state: AppState = app.state.generative
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        loop="none",
        access_log=False,  # payloads and paths stay private; the metrics count requests
        log_level="warning",
        ws="none",
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=75,
        timeout_graceful_shutdown=max(1, round(options.drain_timeout_s)),
    )
    server = _HttpServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http_task = asyncio.create_task(server.serve(), name="http")
    stop_task = asyncio.create_task(stop.wait(), name="stop")
    log.info(
        "modelplane llm-runtime: %s from %s on %s:%d",
        options.served_model_name,
        options.engine.model_dir,
        options.host,
        options.port,
    )
    try:
        await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if http_task.done():  # the listener could not start (port taken, ...)
            raise SystemExit(f"the HTTP server stopped: cannot serve on {options.host}:{options.port}")
        state.leaving = True
        if options.drain_delay_s > 0:
            log.info("leaving: not ready, still serving for %.1f s", options.drain_delay_s)
            await asyncio.sleep(options.drain_delay_s)
        log.info("draining: requests in flight have %.0f s to finish", options.drain_timeout_s)
        server.should_exit = True
        await http_task
    finally:
        stop_task.cancel()
        await asyncio.to_thread(engine.stop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")


def run(options: LlmRuntimeOptions) -> None:
    """Blocking entry point (uvloop when installed)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    try:
        import uvloop

        uvloop.run(serve(options))
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(serve(options))
