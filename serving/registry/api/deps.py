"""Dependencies shared by the routes: the service, the caller's principal, common query parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from modelplane.serving.registry import auth, errors
from modelplane.serving.registry.pagination import DEFAULT_LIMIT, MAX_LIMIT, InvalidCursorError, decode_cursor
from modelplane.serving.registry.service import RegistryService

bearer_scheme = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer mpr_...`")


async def get_service(request: Request) -> RegistryService:
    # async (like every cheap dependency here): a sync one would cost a thread hop per request.
    service: RegistryService = request.app.state.service
    return service


ServiceDep = Annotated[RegistryService, Depends(get_service)]


async def get_principal(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> auth.Principal:
    """The caller; 401 without a valid token (unless anonymous read is on, then read-only access).

    A cached token is answered on the event loop; only a cache miss goes to the database (in a thread).
    """
    if credentials is None:
        if service.settings.anonymous_read:
            return auth.ANONYMOUS
        raise errors.UnauthorizedError("send an API token as 'Authorization: Bearer <token>'")
    cached, principal = service.cached_principal(credentials.credentials)
    if not cached:
        principal = await run_in_threadpool(service.authenticate, credentials.credentials)
    if principal is None:
        raise errors.UnauthorizedError("the API token is unknown or revoked; ask an admin for a new one")
    return principal


PrincipalDep = Annotated[auth.Principal, Depends(get_principal)]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
CursorQuery = Annotated[
    str | None,
    Query(max_length=64, description="`next_cursor` of the previous page", pattern=r"^[A-Za-z0-9_-]+$"),
]
TagQuery = Annotated[
    list[str] | None,
    Query(description="Filter by tag: `key=value`, or `key` for any value; repeat to require several"),
]
DEFAULT_PAGE = DEFAULT_LIMIT


def cursor_key(kind: str, cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return decode_cursor(kind, cursor)
    except InvalidCursorError as exc:
        raise errors.InvalidInputError(f"invalid cursor: {exc}; start again without a cursor") from exc


def parse_tag_filters(values: list[str] | None) -> list[tuple[str, str | None]]:
    from modelplane.registry_client.validation import check_tag_key

    out: list[tuple[str, str | None]] = []
    for raw in values or []:
        key, sep, value = raw.partition("=")
        try:
            check_tag_key(key)
        except ValueError as exc:
            raise errors.InvalidInputError(f"tag filter {raw!r}: {exc}") from exc
        out.append((key, value if sep else None))
    if len(out) > 20:
        raise errors.InvalidInputError("at most 20 tag filters")
    return out


def json_response(
    body: BaseModel, etag: str | None = None, status_code: int = 200, location: str | None = None
) -> Response:
    """Serialize an already-validated public model directly (FastAPI would validate it again)."""
    headers = {}
    if etag is not None:
        headers["ETag"] = etag
    if location is not None:
        headers["Location"] = location
    return Response(
        body.model_dump_json(), status_code=status_code, media_type="application/json", headers=headers
    )
