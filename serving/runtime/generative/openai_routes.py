"""The OpenAI-compatible routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

Each handler reads and validates its body, resolves the model, builds the prompt and the
:class:`SamplingParams`, and returns a response that runs the generation itself (see
:mod:`.streaming`), so every refusal before that point is an :class:`ApiError` (rendered in
OpenAI's error form by the app) and every refusal from the engine is mapped by the response.
"""

from __future__ import annotations

import time
import uuid

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from modelplane.serving.runtime.generative.generation import Submission, run
from modelplane.serving.runtime.generative.http_errors import model_not_found, openai_error_body
from modelplane.serving.runtime.generative.openai_format import (
    ChatEvents,
    CompletionEvents,
    Envelope,
    TokenTexts,
    chat_body,
    completion_body,
)
from modelplane.serving.runtime.generative.openai_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    SamplingFields,
)
from modelplane.serving.runtime.generative.prompting import (
    chat_params,
    chat_prompt,
    check_chat_request,
    completion_params,
    encode_prompt,
    find_engine,
)
from modelplane.serving.runtime.generative.state import AppState, engine_ready, validate
from modelplane.serving.runtime.generative.streaming import JSON, CompletedResponse, EventStreamResponse
from modelplane.serving.runtime.generative.types import Engine


def _card(name: str, engine: Engine) -> ModelCard:
    info = engine.info
    return {
        "id": name,
        "object": "model",
        "created": info.created,
        "owned_by": info.owned_by,
        "root": info.name,
        "parent": None,
        "max_model_len": info.max_model_len,
    }


def _include_usage(body: SamplingFields) -> bool:
    return body.stream_options is not None and body.stream_options.include_usage


def openai_router(state: AppState) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/models")
    async def list_models() -> Response:
        cards = [_card(name, engine) for name, engine in state.engines.items()]
        return Response(orjson.dumps({"object": "list", "data": cards}), media_type=JSON)

    @router.get("/v1/models/{model:path}")
    async def retrieve_model(model: str) -> Response:
        engine = state.engines.get(model)
        if engine is None:
            raise model_not_found(model)
        return Response(orjson.dumps(_card(model, engine)), media_type=JSON)

    @router.post("/v1/completions")
    async def completions(request: Request) -> Response:
        arrival = time.perf_counter()
        body = validate(CompletionRequest, await state.read_json(request))
        name, engine = find_engine(state.engines, body.model)
        engine_ready(name, engine)
        prompt = await encode_prompt(engine.tokenizer, body.prompt, state.tokenizer_thread)
        params = completion_params(body, engine.info, len(prompt))
        request_id = f"cmpl-{uuid.uuid4().hex}"
        outputs = run(Submission(engine, request_id, prompt, params, arrival), state.metrics.model(name))
        envelope = Envelope(request_id, int(time.time()), name)
        texts = TokenTexts(engine.tokenizer) if params.logprobs is not None else None
        if body.stream:
            events = CompletionEvents(envelope, texts, _include_usage(body))
            return EventStreamResponse(outputs, openai_error_body, events)
        return CompletedResponse(
            outputs, openai_error_body, lambda done: orjson.dumps(completion_body(envelope, done, texts))
        )

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        arrival = time.perf_counter()
        body = validate(ChatCompletionRequest, await state.read_json(request))
        check_chat_request(body)
        name, engine = find_engine(state.engines, body.model)
        engine_ready(name, engine)
        prompt = await chat_prompt(engine.tokenizer, body.messages, state.tokenizer_thread)
        params = chat_params(body, engine.info, len(prompt))
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        outputs = run(Submission(engine, request_id, prompt, params, arrival), state.metrics.model(name))
        envelope = Envelope(request_id, int(time.time()), name)
        texts = TokenTexts(engine.tokenizer) if params.logprobs is not None else None
        if body.stream:
            events = ChatEvents(envelope, texts, _include_usage(body))
            return EventStreamResponse(outputs, openai_error_body, events)
        return CompletedResponse(
            outputs, openai_error_body, lambda done: orjson.dumps(chat_body(envelope, done, texts))
        )

    return router
