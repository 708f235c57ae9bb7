"""The FastAPI application: wiring of settings, store, artifact store, service, routes and middleware.

Start-up runs the Alembic migrations to head, removes temp files left by uploads a crash cut short,
creates the bootstrap admin token when configured, and starts the webhook dispatcher.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from modelplane import __version__
from modelplane.registry_client import schemas
from modelplane.serving.registry import migrate, problems
from modelplane.serving.registry.api.routes import (
    admin,
    aliases,
    artifacts,
    files,
    health,
    models,
    versions,
)
from modelplane.serving.registry.artifacts import ArtifactStore
from modelplane.serving.registry.config import Settings
from modelplane.serving.registry.db import Database
from modelplane.serving.registry.middleware import BodyLimitMiddleware, MetricsMiddleware
from modelplane.serving.registry.service import RegistryService
from modelplane.serving.registry.store.sql import SqlStore
from modelplane.serving.registry.webhooks import Dispatcher

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


def build_service(settings: Settings) -> RegistryService:
    db = Database(
        settings.database_url, pool_size=settings.pool_size, sqlite_synchronous=settings.sqlite_synchronous
    )
    store = SqlStore(db)
    artifact_store = ArtifactStore(settings.artifact_root, settings.max_artifact_bytes)
    dispatcher = Dispatcher(store, settings.webhooks)
    return RegistryService(store, artifact_store, settings, dispatcher)


def create_app(settings: Settings) -> FastAPI:
    service = build_service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrate.upgrade(settings.database_url)
        removed = service.artifacts.sweep_temp()
        if removed:
            log.warning("removed %d temporary file(s) of interrupted uploads", removed)
        service.ensure_bootstrap_token()
        if service.dispatcher is not None:
            service.dispatcher.start()
        try:
            yield
        finally:
            if service.dispatcher is not None:
                service.dispatcher.stop()
            service.store.db.dispose()  # type: ignore[attr-defined]

    app = FastAPI(
        title="Modelplane registry",
        version=__version__,
        description=(
            "Models, versions, aliases and artifacts. Every error is `application/problem+json` "
            "(RFC 9457) with a stable `type` URI. Send `Authorization: Bearer <token>`."
        ),
        lifespan=lifespan,
    )
    app.state.service = service
    problems.install(app)
    for router in (
        models.router,
        versions.router,
        aliases.router,
        artifacts.router,
        files.router,
        admin.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(health.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = schemas.Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in problem.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components["Problem"] = problem
    app.openapi_schema = schema
    return schema
