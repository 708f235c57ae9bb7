"""What every route of one generative app shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from modelplane.serving.runtime.generative.http_errors import ApiError, from_validation_error
from modelplane.serving.runtime.generative.metrics import GenerativeMetrics
from modelplane.serving.runtime.generative.prompting import TokenizerThread
from modelplane.serving.runtime.generative.request_body import read_json_object
from modelplane.serving.runtime.generative.types import Engine

_Body = TypeVar("_Body", bound=BaseModel)


@dataclass
class AppState:
    engines: Mapping[str, Engine]  # by served name
    metrics: GenerativeMetrics
    max_body_bytes: int
    tokenizer_thread: TokenizerThread = field(default_factory=TokenizerThread)
    #: Set on SIGTERM: readiness answers 503 (endpoints stop sending) while requests still run.
    leaving: bool = False

    async def read_json(self, request: Request) -> dict[str, Any]:
        return await read_json_object(request, self.max_body_bytes)


def validate(model: type[_Body], raw: object) -> _Body:
    """``raw`` as ``model``, or a 400 naming the first invalid field."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def engine_ready(name: str, engine: Engine) -> None:
    """503 before any work for a model still loading (its tokenizer may not be there yet)."""
    if not engine.ready:
        raise ApiError(503, f"the model `{name}` is not ready yet", code="engine_not_ready", retry_after_s=5)
