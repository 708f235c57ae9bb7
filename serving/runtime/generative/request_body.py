"""Read a request's JSON body under a size limit, before anything parses it.

The limit is checked twice: against ``Content-Length`` before a byte is read (the common case, a
413 at no cost), and against the bytes actually received while they stream in (a chunked body, or a
client that lies about its length), so an oversized body is never held in memory whole.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from modelplane.serving.runtime.generative.http_errors import ApiError, bad_request

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024  # a 128k-token prompt as text or token ids is ~1 MiB


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or :class:`ApiError` 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _too_large(limit)
        except ValueError:
            raise bad_request("Content-Length is not a number") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body parsed as a JSON object; 400 for malformed JSON or any other JSON value."""
    body = await read_body(request, limit)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message names the position, never the content.
        raise bad_request(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise bad_request("the request body must be a JSON object")
    return value
