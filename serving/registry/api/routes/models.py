"""Registered models: create, read, list (filters + cursor), update (If-Match), delete, tags."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from modelplane.registry_client import schemas
from modelplane.serving.registry import problems
from modelplane.serving.registry.api.deps import (
    CursorQuery,
    LimitQuery,
    PrincipalDep,
    ServiceDep,
    TagQuery,
    cursor_key,
    json_response,
    parse_tag_filters,
)
from modelplane.serving.registry.api.params import ModelNamePath, TagKeyPath
from modelplane.serving.registry.pagination import DEFAULT_LIMIT, encode_cursor

router = APIRouter(prefix="/models", tags=["models"], responses=problems.responses(400, 401, 403, 404, 422))
IfMatch = Annotated[
    str | None, Header(max_length=512, description="ETag from a previous read; 412 if it changed")
]


def _model_response(response: Response, etag: str, body: schemas.ModelPublic) -> schemas.ModelPublic:
    response.headers["ETag"] = etag
    return body


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.ModelPublic,
    responses=problems.responses(409, 413),
)
def create_model(
    data: schemas.ModelCreate, service: ServiceDep, who: PrincipalDep, response: Response
) -> schemas.ModelPublic:
    result = service.create_model(who, data)
    response.headers["Location"] = f"/api/v1/models/{data.name}"
    return _model_response(response, result.etag, result.body)


@router.get("", response_model=schemas.Page[schemas.ModelPublic])
def list_models(
    service: ServiceDep,
    who: PrincipalDep,
    name_prefix: Annotated[str | None, Query(max_length=128)] = None,
    tag: TagQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = DEFAULT_LIMIT,
) -> Response:
    items, next_key = service.list_models(
        who, name_prefix, parse_tag_filters(tag), cursor_key("models", cursor), limit
    )
    return json_response(
        schemas.Page(items=items, next_cursor=encode_cursor("models", next_key) if next_key else None)
    )


@router.get("/{name}", response_model=schemas.ModelPublic)
def get_model(name: ModelNamePath, service: ServiceDep, who: PrincipalDep) -> Response:
    result = service.get_model(who, name)
    return json_response(result.body, result.etag)


@router.patch("/{name}", response_model=schemas.ModelPublic, responses=problems.responses(412, 413))
def update_model(
    name: ModelNamePath,
    data: schemas.ModelUpdate,
    service: ServiceDep,
    who: PrincipalDep,
    response: Response,
    if_match: IfMatch = None,
) -> schemas.ModelPublic:
    result = service.update_model(who, name, data, if_match)
    return _model_response(response, result.etag, result.body)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems.responses(409, 412),
)
def delete_model(
    name: ModelNamePath, service: ServiceDep, who: PrincipalDep, if_match: IfMatch = None
) -> Response:
    service.delete_model(who, name, if_match)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/{name}/tags/{key}", response_model=schemas.ModelPublic, responses=problems.responses(413))
def set_model_tag(
    name: ModelNamePath,
    key: TagKeyPath,
    data: schemas.TagSet,
    service: ServiceDep,
    who: PrincipalDep,
    response: Response,
) -> schemas.ModelPublic:
    result = service.set_model_tag(who, name, key, data.value)
    return _model_response(response, result.etag, result.body)


@router.delete("/{name}/tags/{key}", response_model=schemas.ModelPublic)
def delete_model_tag(
    name: ModelNamePath, key: TagKeyPath, service: ServiceDep, who: PrincipalDep, response: Response
) -> schemas.ModelPublic:
    result = service.set_model_tag(who, name, key, None)
    return _model_response(response, result.etag, result.body)
