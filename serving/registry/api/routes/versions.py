"""Model versions: create (numbered 1, 2, 3... atomically), read, search, update, delete, tags."""

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
from modelplane.serving.registry.api.params import K8sNamePath, ModelNamePath, TagKeyPath, VersionPath
from modelplane.serving.registry.pagination import DEFAULT_LIMIT, encode_cursor
from modelplane.serving.registry.store.base import VersionFilter

router = APIRouter(tags=["versions"], responses=problems.responses(400, 401, 403, 404, 422))
IfMatch = Annotated[
    str | None, Header(max_length=512, description="ETag from a previous read; 412 if it changed")
]
AuthorQuery = Annotated[str | None, Query(max_length=256)]
FrameworkQuery = Annotated[str | None, Query(max_length=64)]
StatusQuery = Annotated[schemas.VersionStatus | None, Query()]


def _version_response(response: Response, etag: str, body: schemas.VersionPublic) -> schemas.VersionPublic:
    response.headers["ETag"] = etag
    return body


@router.post(
    "/models/{name}/versions",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.VersionPublic,
    responses=problems.responses(409, 413, 503),
)
def create_version(
    name: ModelNamePath, data: schemas.VersionCreate, service: ServiceDep, who: PrincipalDep
) -> Response:
    result = service.create_version(who, name, data)
    location = f"/api/v1/models/{name}/versions/{result.body.version}"
    return json_response(result.body, result.etag, status.HTTP_201_CREATED, location)


@router.get("/models/{name}/versions", response_model=schemas.Page[schemas.VersionPublic])
def list_model_versions(
    name: ModelNamePath,
    service: ServiceDep,
    who: PrincipalDep,
    author: AuthorQuery = None,
    framework: FrameworkQuery = None,
    status: StatusQuery = None,
    tag: TagQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = DEFAULT_LIMIT,
) -> Response:
    flt = VersionFilter(
        model=name, author=author, framework=framework, status=status, tags=parse_tag_filters(tag)
    )
    items, next_key = service.list_versions(who, flt, cursor_key("model-versions", cursor), limit)
    next_cursor = encode_cursor("model-versions", next_key) if next_key else None
    return json_response(schemas.Page(items=items, next_cursor=next_cursor))


@router.get("/versions", response_model=schemas.Page[schemas.VersionPublic])
def search_versions(
    service: ServiceDep,
    who: PrincipalDep,
    name_prefix: Annotated[str | None, Query(max_length=128)] = None,
    author: AuthorQuery = None,
    framework: FrameworkQuery = None,
    status: StatusQuery = None,
    tag: TagQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = DEFAULT_LIMIT,
) -> Response:
    """Search versions of all models the token may read."""
    flt = VersionFilter(
        name_prefix=name_prefix,
        author=author,
        framework=framework,
        status=status,
        tags=parse_tag_filters(tag),
    )
    items, next_key = service.list_versions(who, flt, cursor_key("versions", cursor), limit)
    return json_response(
        schemas.Page(items=items, next_cursor=encode_cursor("versions", next_key) if next_key else None)
    )


@router.get("/models/{name}/versions/{version}", response_model=schemas.VersionPublic)
def get_version(
    name: ModelNamePath, version: VersionPath, service: ServiceDep, who: PrincipalDep
) -> Response:
    result = service.get_version(who, name, version)
    return json_response(result.body, result.etag)


@router.patch(
    "/models/{name}/versions/{version}",
    response_model=schemas.VersionPublic,
    responses=problems.responses(409, 412, 413),
)
def update_version(
    name: ModelNamePath,
    version: VersionPath,
    data: schemas.VersionUpdate,
    service: ServiceDep,
    who: PrincipalDep,
    response: Response,
    if_match: IfMatch = None,
) -> schemas.VersionPublic:
    result = service.update_version(who, name, version, data, if_match)
    return _version_response(response, result.etag, result.body)


@router.delete(
    "/models/{name}/versions/{version}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems.responses(409, 412),
)
def delete_version(
    name: ModelNamePath,
    version: VersionPath,
    service: ServiceDep,
    who: PrincipalDep,
    if_match: IfMatch = None,
) -> Response:
    service.delete_version(who, name, version, if_match)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/models/{name}/versions/{version}/tags/{key}",
    response_model=schemas.VersionPublic,
    responses=problems.responses(413),
)
def set_version_tag(
    name: ModelNamePath,
    version: VersionPath,
    key: TagKeyPath,
    data: schemas.TagSet,
    service: ServiceDep,
    who: PrincipalDep,
    response: Response,
) -> schemas.VersionPublic:
    result = service.set_version_tag(who, name, version, key, data.value)
    return _version_response(response, result.etag, result.body)


@router.delete("/models/{name}/versions/{version}/tags/{key}", response_model=schemas.VersionPublic)
def delete_version_tag(
    name: ModelNamePath,
    version: VersionPath,
    key: TagKeyPath,
    service: ServiceDep,
    who: PrincipalDep,
    response: Response,
) -> schemas.VersionPublic:
    result = service.set_version_tag(who, name, version, key, None)
    return _version_response(response, result.etag, result.body)


@router.put(
    "/models/{name}/versions/{version}/deployments/{namespace}/{deployment}",
    response_model=schemas.DeploymentPublic,
)
def report_deployment(
    name: ModelNamePath,
    version: VersionPath,
    namespace: K8sNamePath,
    deployment: K8sNamePath,
    service: ServiceDep,
    who: PrincipalDep,
) -> schemas.DeploymentPublic:
    """Record that a deployment serves this version (the operator calls this); idempotent."""
    return service.report_deployment(who, name, version, namespace, deployment)


@router.delete(
    "/models/{name}/versions/{version}/deployments/{namespace}/{deployment}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
def remove_deployment(
    name: ModelNamePath,
    version: VersionPath,
    namespace: K8sNamePath,
    deployment: K8sNamePath,
    service: ServiceDep,
    who: PrincipalDep,
) -> Response:
    service.remove_deployment(who, name, version, namespace, deployment)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/models/{name}/deployments", response_model=list[schemas.DeploymentPublic])
def list_deployments(
    name: ModelNamePath, service: ServiceDep, who: PrincipalDep
) -> list[schemas.DeploymentPublic]:
    return service.list_deployments(who, name)
