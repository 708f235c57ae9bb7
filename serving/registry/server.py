"""Run the registry with uvicorn (``modelplane registry serve``)."""

from __future__ import annotations

import logging

import uvicorn

from modelplane.serving.heap import settle_heap
from modelplane.serving.registry.app import create_app
from modelplane.serving.registry.config import Settings


def serve(settings: Settings, host: str, port: int, log_level: str = "info") -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    settle_heap()  # what start-up made (modules, routes, schemas) lives for the whole process
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        limit_concurrency=1000,
    )
