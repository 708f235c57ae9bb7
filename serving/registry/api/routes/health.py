"""Health (process up), readiness (database reachable) and Prometheus metrics: no token needed."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modelplane.registry_client import schemas
from modelplane.serving.registry import errors, problems
from modelplane.serving.registry.api.deps import ServiceDep
from modelplane.serving.registry.metrics import REGISTRY

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=schemas.Health)
async def healthz() -> schemas.Health:
    return schemas.Health(status="ok")


@router.get("/readyz", response_model=schemas.Health, responses=problems.responses(503))
def readyz(service: ServiceDep) -> schemas.Health:
    try:
        service.store.ping()
    except Exception as exc:
        raise errors.UnavailableError(f"the database is not reachable: {type(exc).__name__}") from exc
    return schemas.Health(status="ready")


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
