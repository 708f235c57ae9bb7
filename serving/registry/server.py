"""Run the registry with uvicorn (``modelplane registry serve``)."""

from __future__ import annotations

import gc
import logging

import uvicorn

from modelplane.serving.registry.app import create_app
from modelplane.serving.registry.config import Settings


def serve(settings: Settings, host: str, port: int, log_level: str = "info") -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    # Objects made at start-up (modules, routes, schemas) live for the whole process: keep them out
    # of the garbage collector's generations so its full collections, which pause requests, stay short.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        limit_concurrency=1000,
    )
