"""Admin-only resources: API tokens, the audit log, webhook subscriptions and their deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from modelplane.registry_client import schemas
from modelplane.serving.registry import problems
from modelplane.serving.registry.api.deps import CursorQuery, LimitQuery, PrincipalDep, ServiceDep, cursor_key
from modelplane.serving.registry.api.params import IdPath
from modelplane.serving.registry.pagination import DEFAULT_LIMIT, encode_cursor

router = APIRouter(responses=problems.responses(400, 401, 403, 404, 422))


@router.post(
    "/tokens",
    tags=["tokens"],
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.TokenCreated,
    responses=problems.responses(409, 413),
)
def create_token(data: schemas.TokenCreate, service: ServiceDep, who: PrincipalDep) -> schemas.TokenCreated:
    """Create a token; its secret is in this response only (the registry keeps a hash)."""
    return service.create_token(who, data)


@router.get("/tokens", tags=["tokens"], response_model=list[schemas.TokenPublic])
def list_tokens(service: ServiceDep, who: PrincipalDep) -> list[schemas.TokenPublic]:
    return service.list_tokens(who)


@router.delete(
    "/tokens/{token_id}", tags=["tokens"], status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
def revoke_token(token_id: IdPath, service: ServiceDep, who: PrincipalDep) -> Response:
    service.revoke_token(who, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/audit", tags=["audit"], response_model=schemas.Page[schemas.AuditPublic])
def list_audit(
    service: ServiceDep,
    who: PrincipalDep,
    object_id: Annotated[
        str | None, Query(max_length=300, description="'model', 'model/3', 'model@alias'")
    ] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = DEFAULT_LIMIT,
) -> schemas.Page[schemas.AuditPublic]:
    """The append-only audit log, oldest first: who did what to which object, before and after."""
    items, next_key = service.list_audit(who, object_id, cursor_key("audit", cursor), limit)
    return schemas.Page(items=items, next_cursor=encode_cursor("audit", next_key) if next_key else None)


@router.post(
    "/webhooks",
    tags=["webhooks"],
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.WebhookCreated,
    responses=problems.responses(413),
)
def create_webhook(
    data: schemas.WebhookCreate, service: ServiceDep, who: PrincipalDep
) -> schemas.WebhookCreated:
    """Subscribe a URL to events; deliveries are signed with the returned secret (HMAC-SHA256)."""
    return service.create_webhook(who, data)


@router.get("/webhooks", tags=["webhooks"], response_model=list[schemas.WebhookPublic])
def list_webhooks(service: ServiceDep, who: PrincipalDep) -> list[schemas.WebhookPublic]:
    return service.list_webhooks(who)


@router.delete(
    "/webhooks/{webhook_id}",
    tags=["webhooks"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
def delete_webhook(webhook_id: IdPath, service: ServiceDep, who: PrincipalDep) -> Response:
    service.delete_webhook(who, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/webhooks/{webhook_id}/deliveries", tags=["webhooks"], response_model=list[schemas.DeliveryPublic]
)
def list_deliveries(
    webhook_id: IdPath,
    service: ServiceDep,
    who: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[schemas.DeliveryPublic]:
    """The delivery log, newest first: attempts, last status code and error."""
    return service.list_deliveries(who, webhook_id, limit)
