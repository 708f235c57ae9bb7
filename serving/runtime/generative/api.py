"""The HTTP layer of a generative model server, over any :class:`~.types.Engine`.

:func:`create_app` serves, for each engine under its served name:

- OpenAI's API (:mod:`.openai_routes`): ``GET /v1/models[/NAME]``, ``POST /v1/completions``,
  ``POST /v1/chat/completions``, streamed or not; errors in OpenAI's form
  ``{"error": {"message", "type", "param", "code"}}``;
- Triton's generate extension (:mod:`.triton_generate`): ``POST /v2/models/NAME/generate`` and
  ``/generate_stream``; errors in V2's form ``{"error": "..."}``;
- health: ``GET /v2/health/live`` (always 200), ``/v2/health/ready`` and vLLM's ``/health`` (200
  when every engine is ready and the server is not leaving, else 503); ``GET /metrics`` (vLLM's
  metric names, :mod:`.metrics`).

Status codes, on every route: 400 malformed JSON, a field out of range (named), a prompt too long
for the context (both lengths named) or an unsupported option; 404 an unknown model (OpenAI code
``model_not_found``) or route; 413 a body over ``max_body_bytes``; 429 the engine's queue is full
and 503 the engine is not ready, both with ``Retry-After``; 500 a failure of ours, for that request
only. A client that disconnects aborts its sequence in the engine (see :mod:`.streaming`).

FastAPI rather than a hand-written ASGI app (as the V2 runtime's ``http_app``): per-token compute
dominates a generative request, and the handlers read their bodies themselves (size limit first,
then our own validation errors), so FastAPI's routing is all that is used of it. Prompts and
outputs are never logged: payloads are private.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from modelplane.serving.runtime.generative.http_errors import (
    ApiError,
    ErrorFormat,
    openai_error_body,
    v2_error_body,
)
from modelplane.serving.runtime.generative.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from modelplane.serving.runtime.generative.metrics import GenerativeMetrics
from modelplane.serving.runtime.generative.openai_routes import openai_router
from modelplane.serving.runtime.generative.request_body import DEFAULT_MAX_BODY_BYTES
from modelplane.serving.runtime.generative.state import AppState
from modelplane.serving.runtime.generative.streaming import JSON, internal_error
from modelplane.serving.runtime.generative.triton_generate import triton_router
from modelplane.serving.runtime.generative.types import Engine

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]


def _error_format(request: Request) -> ErrorFormat:
    """V2's error form under ``/v2/``, OpenAI's everywhere else."""
    return v2_error_body if request.url.path.startswith("/v2/") else openai_error_body


def _error_response(request: Request, error: ApiError) -> Response:
    return Response(
        _error_format(request)(error), status_code=error.status, headers=error.headers(), media_type=JSON
    )


def create_app(
    engines: Mapping[str, Engine],
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    metrics: GenerativeMetrics | None = None,
) -> FastAPI:
    """The app serving ``engines`` by served name; ``metrics`` (one per app) defaults to a fresh registry."""
    state = AppState(
        engines=engines,
        metrics=metrics if metrics is not None else GenerativeMetrics(),
        max_body_bytes=max_body_bytes,
    )
    state.metrics.watch(engines)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.tokenizer_thread.close()

    # No /docs or /openapi.json: the handlers read their bodies themselves, so the generated schema
    # would describe none of them.
    app = FastAPI(
        title="Modelplane generative", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.generative = state
    app.include_router(openai_router(state))
    app.include_router(triton_router(state))

    def all_ready() -> bool:
        return not state.leaving and all(engine.ready for engine in engines.values())

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    @app.get("/health")
    async def ready() -> Response:
        return Response(status_code=200 if all_ready() else 503)

    @app.get("/metrics")
    async def scrape() -> Response:
        return Response(state.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error_response(request, exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: Exception) -> Response:
        # Unknown routes (404) and methods (405), in the route family's error form.
        assert isinstance(exc, HTTPException)
        return _error_response(request, ApiError(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # Starlette logs the exception itself after this answer; this request alone fails.
        return _error_response(request, internal_error())

    return app
