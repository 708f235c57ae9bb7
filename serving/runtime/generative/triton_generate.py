"""Triton's generate extension over the same engines: ``/v2/models/NAME[/versions/V]/generate[_stream]``.

Request: ``{"text_input": "...", "parameters": {"max_tokens": 20, "temperature": 0, ...}}``. Triton
also takes the parameters as top-level fields (its examples send ``{"text_input": ..., "max_tokens":
20}``), so both are read, ``parameters`` winning. Response: ``{"model_name", "model_version",
"text_output"}`` (and the request's ``id``, if it had one); the stream sends one such event per
increment, ``text_output`` holding the increment, and ends when the generation does (Triton sends no
``[DONE]``). Errors are V2's ``{"error": "..."}``, with the same status codes as the OpenAI routes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from modelplane.serving.runtime.generative.generation import Submission, run
from modelplane.serving.runtime.generative.http_errors import ApiError, bad_request, v2_error_body
from modelplane.serving.runtime.generative.prompting import encode_prompt, sampling_params
from modelplane.serving.runtime.generative.state import AppState, engine_ready, validate
from modelplane.serving.runtime.generative.streaming import CompletedResponse, EventStreamResponse, event
from modelplane.serving.runtime.generative.types import Engine, GenerationOutput

DEFAULT_VERSION = "1"


class GenerateParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")  # other parameters, as Triton's backends, are ignored

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    stream: bool = False


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    text_input: str
    parameters: GenerateParameters = GenerateParameters()


def _with_parameters(raw: dict[str, Any]) -> dict[str, Any]:
    """Top-level parameter fields folded into ``parameters`` (which wins on a clash)."""
    nested = raw.get("parameters", {})
    if not isinstance(nested, dict):
        return raw  # validation names it
    top = {key: raw[key] for key in GenerateParameters.model_fields if key in raw}
    return {**raw, "parameters": {**top, **nested}}


def model_version(engine: Engine) -> str:
    return engine.info.extra.get("version", DEFAULT_VERSION)


@dataclass(frozen=True)
class _Answer:
    """The fields every answer of one request repeats."""

    model_name: str
    model_version: str
    id: str | None

    def body(self, text: str) -> dict[str, str]:
        fields = {"model_name": self.model_name, "model_version": self.model_version, "text_output": text}
        return fields if self.id is None else {"id": self.id, **fields}


@dataclass(frozen=True)
class GenerateEvents:
    """One event per increment that adds text; errors as ``{"error": "..."}``."""

    answer: _Answer

    def head(self) -> Iterable[bytes]:
        return ()

    def increment(self, output: GenerationOutput) -> Iterable[bytes]:
        return (event(self.answer.body(output.text)),) if output.text else ()

    def tail(self, last: GenerationOutput) -> Iterable[bytes]:
        return ()

    def error(self, error: ApiError) -> Iterable[bytes]:
        return (b"data: " + v2_error_body(error) + b"\n\n",)


def triton_router(state: AppState) -> APIRouter:
    router = APIRouter()

    async def generate(request: Request, name: str, version: str | None, stream: bool) -> Response:
        arrival = time.perf_counter()
        raw = await state.read_json(request)
        engine = state.engines.get(name)
        if engine is None:
            raise ApiError(404, f"unknown model '{name}'")
        if version is not None and version != model_version(engine):
            raise ApiError(404, f"unknown version '{version}' of model '{name}'")
        body = validate(GenerateRequest, _with_parameters(raw))
        parameters = body.parameters
        if parameters.stream and not stream:
            raise bad_request("stream is not supported on generate; use generate_stream", param="stream")
        engine_ready(name, engine)
        prompt = await encode_prompt(engine.tokenizer, body.text_input, state.tokenizer_thread, "text_input")
        params = sampling_params(
            engine.info,
            len(prompt),
            max_tokens=parameters.max_tokens,
            temperature=parameters.temperature,
            top_p=parameters.top_p,
            top_k=parameters.top_k,
            seed=parameters.seed,
            stop=parameters.stop,
            stop_token_ids=parameters.stop_token_ids,
            ignore_eos=parameters.ignore_eos,
        )
        request_id = f"generate-{uuid.uuid4().hex}"
        outputs = run(Submission(engine, request_id, prompt, params, arrival), state.metrics.model(name))
        answer = _Answer(name, model_version(engine), body.id)
        if stream:
            return EventStreamResponse(outputs, v2_error_body, GenerateEvents(answer))
        return CompletedResponse(
            outputs, v2_error_body, lambda done: orjson.dumps(answer.body("".join(o.text for o in done)))
        )

    @router.post("/v2/models/{name}/generate")
    async def generate_once(request: Request, name: str) -> Response:
        return await generate(request, name, None, stream=False)

    @router.post("/v2/models/{name}/versions/{version}/generate")
    async def generate_version(request: Request, name: str, version: str) -> Response:
        return await generate(request, name, version, stream=False)

    @router.post("/v2/models/{name}/generate_stream")
    async def generate_stream(request: Request, name: str) -> Response:
        return await generate(request, name, None, stream=True)

    @router.post("/v2/models/{name}/versions/{version}/generate_stream")
    async def generate_stream_version(request: Request, name: str, version: str) -> Response:
        return await generate(request, name, version, stream=True)

    return router
