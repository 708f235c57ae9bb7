"""Every error the registry answers is ``application/problem+json`` (RFC 9457) with a stable ``type``.

Handlers here turn domain errors, FastAPI's validation errors, Starlette's HTTP errors and anything
unexpected into problem documents; validation problems carry field-level ``errors``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelplane.registry_client.schemas import FieldError, Problem
from modelplane.serving.registry import errors

PROBLEM_BASE = "https://modelplane.io/problems/"
MEDIA_TYPE = "application/problem+json"
log = logging.getLogger(__name__)

_STATUS_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    411: ("length-required", "Length required"),
    412: ("precondition-failed", "Precondition failed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    416: ("range-not-satisfiable", "Range not satisfiable"),
    422: ("validation-error", "Validation error"),
    500: ("internal-error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}


def problem_type(slug: str) -> str:
    return PROBLEM_BASE + slug


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str = "",
    instance: str | None = None,
    field_errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=problem_type(slug),
        title=title,
        status=status,
        detail=detail,
        instance=instance,
        errors=field_errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, media_type=MEDIA_TYPE, headers=headers
    )


def _jsonable_loc(loc: Any) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


async def _registry_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.RegistryError)
    headers = {"WWW-Authenticate": 'Bearer realm="modelplane-registry"'} if exc.status == 401 else None
    return problem_response(exc.status, exc.slug, exc.title, exc.detail, request.url.path, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    field_errors = [
        FieldError(
            loc=_jsonable_loc(e.get("loc", ())), msg=str(e.get("msg", "")), type=str(e.get("type", ""))
        )
        for e in raw
    ]
    if any(e.type == "json_invalid" for e in field_errors):
        return problem_response(
            400,
            "invalid-json",
            "Malformed JSON",
            "The request body is not valid JSON.",
            request.url.path,
            field_errors,
        )
    summary = "; ".join(f"{'.'.join(str(p) for p in e.loc)}: {e.msg}" for e in field_errors[:5])
    return problem_response(
        422, "validation-error", "Validation error", summary, request.url.path, field_errors
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug, title = _STATUS_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else ""
    return problem_response(exc.status_code, slug, title, detail, request.url.path, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        500, "internal-error", "Internal server error", "The registry failed; see its log.", request.url.path
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.RegistryError, _registry_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem documents for the given status codes."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        _, title = _STATUS_SLUGS.get(status, ("", "Error"))
        out[status] = {
            "description": title,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out
