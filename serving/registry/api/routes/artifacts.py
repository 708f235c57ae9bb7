"""Artifact upload (streamed, sha256-checked) and download (ETag = digest, Range requests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse

from modelplane.registry_client import schemas
from modelplane.serving.registry import errors, problems
from modelplane.serving.registry.api.deps import PrincipalDep, ServiceDep
from modelplane.serving.registry.api.params import ModelNamePath, VersionPath

router = APIRouter(tags=["artifacts"], responses=problems.responses(400, 401, 403, 404, 422))
DIGEST_HEADER = "X-Checksum-Sha256"
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _declared_size(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise errors.InvalidInputError("Content-Length must be a non-negative integer")
    return int(raw)


@router.put(
    "/models/{name}/versions/{version}/artifact",
    response_model=schemas.VersionPublic,
    responses=problems.responses(409, 413),
    openapi_extra=_UPLOAD_BODY,
)
async def upload_artifact(
    name: ModelNamePath,
    version: VersionPath,
    request: Request,
    service: ServiceDep,
    who: PrincipalDep,
    response: Response,
    x_checksum_sha256: Annotated[
        str | None,
        Header(
            alias=DIGEST_HEADER, max_length=80, description="sha256 of the body: 'sha256:<64 hex>' (required)"
        ),
    ] = None,
    filename: Annotated[str | None, Query(max_length=255, description="File name for downloads")] = None,
) -> schemas.VersionPublic:
    """Upload the version's artifact; the version becomes READY only if the sha256 matches.

    The body is streamed to disk (any size up to the registry's limit); on a digest mismatch, an
    interrupted upload or an over-size body nothing is stored and the version stays PENDING.
    """

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            yield chunk

    result = await service.upload_artifact(
        who, name, version, x_checksum_sha256, filename, _declared_size(request), chunks()
    )
    response.headers["ETag"] = result.etag
    return result.body


@router.get(
    "/models/{name}/versions/{version}/artifact",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        206: {
            "description": "Partial content (Range)",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        304: {"description": "Not modified (If-None-Match matched)"},
        **problems.responses(416, 503),
    },
)
def download_artifact(
    name: ModelNamePath,
    version: VersionPath,
    service: ServiceDep,
    who: PrincipalDep,
    if_none_match: Annotated[str | None, Header(max_length=512)] = None,
) -> Response:
    """The artifact's bytes; ``ETag`` is its digest, ``Range`` requests return 206."""
    ref, path = service.artifact_for_download(who, name, version)
    etag = f'"{ref.digest}"'
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=ref.filename,
        headers={"ETag": etag, "X-Checksum-Sha256": ref.digest, "Cache-Control": "private, max-age=0"},
    )
