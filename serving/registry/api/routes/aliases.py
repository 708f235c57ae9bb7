"""Aliases (``production`` → 3): set or move, read, resolve to the version, delete, history."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from modelplane.registry_client import schemas
from modelplane.serving.registry import problems
from modelplane.serving.registry.api.deps import PrincipalDep, ServiceDep, json_response
from modelplane.serving.registry.api.params import AliasPath, ModelNamePath

router = APIRouter(
    prefix="/models/{name}/aliases", tags=["aliases"], responses=problems.responses(400, 401, 403, 404, 422)
)


@router.get("", response_model=list[schemas.AliasPublic])
def list_aliases(name: ModelNamePath, service: ServiceDep, who: PrincipalDep) -> list[schemas.AliasPublic]:
    return service.list_aliases(who, name)


@router.put("/{alias}", response_model=schemas.AliasPublic, responses=problems.responses(413))
def set_alias(
    name: ModelNamePath, alias: AliasPath, data: schemas.AliasSet, service: ServiceDep, who: PrincipalDep
) -> schemas.AliasPublic:
    """Point the alias at a version (creating or moving it); every move is kept in its history."""
    return service.set_alias(who, name, alias, data.version)


@router.get("/{alias}", response_model=schemas.AliasPublic)
def get_alias(
    name: ModelNamePath, alias: AliasPath, service: ServiceDep, who: PrincipalDep
) -> schemas.AliasPublic:
    return service.get_alias(who, name, alias)


@router.get("/{alias}/version", response_model=schemas.VersionPublic)
def resolve_alias(name: ModelNamePath, alias: AliasPath, service: ServiceDep, who: PrincipalDep) -> Response:
    """The version the alias points at (what a deployment of ``name@alias`` serves)."""
    result = service.resolve_alias(who, name, alias)
    return json_response(result.body, result.etag)


@router.delete("/{alias}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_alias(name: ModelNamePath, alias: AliasPath, service: ServiceDep, who: PrincipalDep) -> Response:
    service.delete_alias(who, name, alias)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{alias}/history", response_model=list[schemas.AliasEventPublic])
def alias_history(
    name: ModelNamePath, alias: AliasPath, service: ServiceDep, who: PrincipalDep
) -> list[schemas.AliasEventPublic]:
    return service.alias_history(who, name, alias)
