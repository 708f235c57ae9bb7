"""Directory artifacts: upload files one by one (each sha256-checked, resumable), list, commit, download.

The commit is ``POST .../files:commit`` (the colon form does not collide with ``.../files/{path}``,
which takes any path below ``files/``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from modelplane.registry_client import schemas
from modelplane.serving.registry import problems
from modelplane.serving.registry.api.deps import PrincipalDep, ServiceDep, json_response
from modelplane.serving.registry.api.params import ModelNamePath, VersionPath
from modelplane.serving.registry.api.routes.artifacts import _UPLOAD_BODY, DIGEST_HEADER, _declared_size

router = APIRouter(tags=["artifacts"], responses=problems.responses(400, 401, 403, 404, 422))
FILES = "/models/{name}/versions/{version}/files"
FilePathParam = Annotated[
    str,
    PathParam(
        description="The file's relative POSIX path in the directory, such as 'tokenizer.json' or "
        "'onnx/model.onnx': at most 8 segments and 512 characters, each segment letters, digits, '.', "
        "'_' or '-' (no '..', empty segment, leading '/', backslash or control character: 400)"
    ),
]
_OCTETS = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@router.put(
    FILES + "/{path:path}",
    response_model=schemas.FileEntry,
    responses={
        201: {"description": "Stored", "model": schemas.FileEntry},
        **problems.responses(409, 413, 503),
    },
    openapi_extra=_UPLOAD_BODY,
)
async def upload_file(
    name: ModelNamePath,
    version: VersionPath,
    path: FilePathParam,
    request: Request,
    service: ServiceDep,
    who: PrincipalDep,
    x_checksum_sha256: Annotated[
        str | None,
        Header(
            alias=DIGEST_HEADER, max_length=80, description="sha256 of the body: 'sha256:<64 hex>' (required)"
        ),
    ] = None,
) -> Response:
    """Store one file of the version's directory artifact (201), if its sha256 matches.

    Allowed while the version is PENDING without a single-file artifact. The same path with the
    same digest again is a no-op (200: an interrupted upload resumes); another digest is a 409.
    """

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            yield chunk

    created, entry = await service.upload_file(
        who, name, version, path, x_checksum_sha256, _declared_size(request), chunks()
    )
    response = json_response(entry, status_code=201 if created else 200)
    response.headers["ETag"] = f'"sha256:{entry.sha256}"'
    return response


@router.get(FILES, response_model=schemas.FileList)
def list_files(name: ModelNamePath, version: VersionPath, service: ServiceDep, who: PrincipalDep) -> Response:
    """The files of the version's directory artifact, sorted by path; ``digest`` once committed."""
    return json_response(service.list_files(who, name, version))


@router.post(
    FILES + ":commit",
    response_model=schemas.VersionPublic,
    responses=problems.responses(409, 413, 503),
)
def commit_files(
    name: ModelNamePath,
    version: VersionPath,
    data: schemas.FilesCommit,
    service: ServiceDep,
    who: PrincipalDep,
) -> Response:
    """Make the uploaded files the version's directory artifact: the version becomes READY.

    ``files`` must list exactly the files stored, with their sha256 and size (409
    ``manifest-mismatch`` naming the missing and extra ones otherwise, and nothing changes). The
    artifact's digest is the sha256 of the canonical manifest
    ``json.dumps(sorted([[path, sha256_hex, size], ...]), separators=(",", ":"))``. Committing the
    same files again answers the version unchanged.
    """
    _, result = service.commit_files(who, name, version, data)
    return json_response(result.body, result.etag)


@router.get(
    FILES + "/{path:path}",
    response_class=FileResponse,
    responses={
        200: {"content": _OCTETS},
        206: {"description": "Partial content (Range)", "content": _OCTETS},
        304: {"description": "Not modified (If-None-Match matched)"},
        **problems.responses(416, 503),
    },
)
def download_file(
    name: ModelNamePath,
    version: VersionPath,
    path: FilePathParam,
    service: ServiceDep,
    who: PrincipalDep,
    if_none_match: Annotated[str | None, Header(max_length=512)] = None,
) -> Response:
    """One file of the directory artifact; ``ETag`` is its digest, ``Range`` requests return 206."""
    entry, blob = service.file_for_download(who, name, version, path)
    digest = "sha256:" + entry.sha256
    etag = f'"{digest}"'
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    return FileResponse(
        blob,
        media_type="application/octet-stream",
        filename=entry.path.rsplit("/", 1)[-1],
        headers={"ETag": etag, "X-Checksum-Sha256": digest, "Cache-Control": "private, max-age=0"},
    )
