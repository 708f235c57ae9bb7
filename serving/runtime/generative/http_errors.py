"""One error type for the generative API, rendered in either protocol's error form.

Every refusal (bad JSON, a parameter out of range, an unknown model, a full queue) becomes an
:class:`ApiError` carrying its HTTP status; the OpenAI routes render it as OpenAI's
``{"error": {"message", "type", "param", "code"}}`` and Triton's generate routes as V2's
``{"error": "..."}``, with the same status and ``Retry-After`` either way. Messages name fields and
lengths, never a prompt's or an output's text: payloads are private.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from modelplane.serving.runtime.generative.types import (
    EngineNotReadyError,
    GenerationError,
    InvalidRequestError,
    QueueFullError,
)

#: OpenAI's error ``type`` by status (the official client picks its exception by status alone).
_OPENAI_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


@dataclass(eq=False)  # compared by identity, hashable, as exceptions are
class ApiError(Exception):
    """A request refused with ``status``; ``param`` names the offending field (OpenAI's form)."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    retry_after_s: int | None = None

    def __str__(self) -> str:
        return self.message

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def model_not_found(name: str) -> ApiError:
    return ApiError(404, f"The model `{name}` does not exist.", param="model", code="model_not_found")


def from_generation_error(exc: GenerationError) -> ApiError:
    """The status each engine refusal maps to (see :mod:`.types`)."""
    if isinstance(exc, QueueFullError):
        return ApiError(429, str(exc), code="queue_full", retry_after_s=exc.retry_after_s)
    if isinstance(exc, EngineNotReadyError):
        return ApiError(503, str(exc), code="engine_not_ready", retry_after_s=exc.retry_after_s)
    if isinstance(exc, InvalidRequestError):
        return ApiError(400, str(exc))
    return ApiError(500, "the engine could not serve this request", code="internal_error")


def _location(loc: Iterable[int | str]) -> str:
    return ".".join(str(part) for part in loc)


def from_validation_error(exc: ValidationError) -> ApiError:
    """400 naming the first invalid field. Built from the location and the reason only: pydantic's
    own text quotes the input, which may be a prompt."""
    first: ErrorDetails = exc.errors(include_url=False, include_input=False)[0]
    param = _location(first["loc"])
    reason = first["msg"].removeprefix("Value error, ")
    return bad_request(f"{param}: {reason}" if param else reason, param=param or None)


def openai_error_body(error: ApiError) -> bytes:
    kind = _OPENAI_TYPES.get(error.status, "server_error" if error.status >= 500 else "invalid_request_error")
    body: dict[str, Any] = {
        "error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}
    }
    return orjson.dumps(body)


def v2_error_body(error: ApiError) -> bytes:
    return orjson.dumps({"error": error.message})


#: How a family of routes renders an error body.
ErrorFormat = Callable[[ApiError], bytes]
