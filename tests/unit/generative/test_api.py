"""The generative API's non-streaming behaviour over the fake engine: shapes, parameter mapping,
every error and its status, health, metrics and Triton's generate.

The fake engine answers with ``DEFAULT_REPLY`` one character (token) at a time, so every expected
text and count is known exactly.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelplane.serving.runtime.generative.api import create_app
from modelplane.serving.runtime.generative.metrics import GenerativeMetrics
from modelplane.serving.runtime.generative.types import (
    EngineNotReadyError,
    InvalidRequestError,
    QueueFullError,
    SamplingParams,
)
from modelplane.testing.fake_engine import DEFAULT_REPLY, FakeEngine, fake_logprob

SECRET = "zebra-crossing-4711"  # a prompt fragment no error or log may repeat


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine("fake", max_model_len=256)


@pytest.fixture
async def client(engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app({"fake": engine}, max_body_bytes=4096)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": "fake", "prompt": "Hello", **fields}


def chat(content: Any = "Hello", **fields: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": content}], **fields}


def last_params(engine: FakeEngine) -> SamplingParams:
    return engine.requests[-1].params


# Models.


async def test_models_lists_each_engine_in_openais_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    assert response.json() == {
        "object": "list",
        "data": [
            {
                "id": "fake",
                "object": "model",
                "created": 1_700_000_000,
                "owned_by": "modelplane",
                "root": "fake",
                "parent": None,
                "max_model_len": 256,
            }
        ],
    }
    assert (await client.get("/v1/models/fake")).json()["id"] == "fake"
    missing = await client.get("/v1/models/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


# Completions.


async def test_completion_has_openais_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/completions", json=completion(max_tokens=5, user="someone"))
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "fake"
    assert body["choices"] == [
        {"index": 0, "text": DEFAULT_REPLY[:5], "logprobs": None, "finish_reason": "length"}
    ]
    assert body["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


async def test_a_reply_that_ends_before_max_tokens_finishes_with_stop(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    engine.reply = "Short."
    body = (await client.post("/v1/completions", json=completion(max_tokens=50))).json()
    assert body["choices"][0]["text"] == "Short."
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 6


async def test_max_tokens_defaults_to_the_room_left_in_the_context(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    await client.post("/v1/completions", json=completion())
    assert last_params(engine).max_tokens == 256 - 5
    await client.post("/v1/chat/completions", json=chat())
    prompt = len(engine.requests[-1].prompt_token_ids)
    assert last_params(engine).max_tokens == 256 - prompt


@pytest.mark.parametrize("prompt", [[72, 105], [[72, 105]]])
async def test_a_prompt_of_token_ids_reaches_the_engine_as_is(
    client: httpx.AsyncClient, engine: FakeEngine, prompt: list[Any]
) -> None:
    response = await client.post("/v1/completions", json=completion(prompt=prompt, max_tokens=2))
    assert response.status_code == 200
    assert engine.requests[-1].prompt_token_ids == (72, 105)
    assert response.json()["usage"]["prompt_tokens"] == 2


async def test_a_batch_of_one_prompt_is_that_prompt(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    assert (
        await client.post("/v1/completions", json=completion(prompt=["Hi"], max_tokens=1))
    ).status_code == 200
    assert engine.requests[-1].prompt_token_ids == (72, 105)


async def test_sampling_fields_map_to_sampling_params(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    response = await client.post(
        "/v1/completions",
        json=completion(
            max_tokens=7,
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            seed=1234,
            stop=["\n", "END"],
            stop_token_ids=[2],
            ignore_eos=True,
            logprobs=2,
        ),
    )
    assert response.status_code == 200
    assert last_params(engine) == SamplingParams(
        max_tokens=7,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        seed=1234,
        stop=("\n", "END"),
        stop_token_ids=(2,),
        ignore_eos=True,
        logprobs=2,
    )


async def test_defaults_and_vllms_top_k_of_minus_one(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    await client.post("/v1/completions", json=completion(max_tokens=1, top_k=-1, stop="x"))
    assert last_params(engine) == SamplingParams(max_tokens=1, stop=("x",))


async def test_a_stop_string_ends_the_text_before_it(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/completions", json=completion(stop=" brown", max_tokens=40))).json()
    assert body["choices"][0]["text"] == "The quick"
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_completion_logprobs_in_the_legacy_form(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/completions", json=completion(max_tokens=3, logprobs=1))).json()
    assert body["choices"][0]["logprobs"] == {
        "tokens": ["T", "h", "e"],
        "token_logprobs": [fake_logprob(0), fake_logprob(1), fake_logprob(2)],
        "top_logprobs": [{"T": fake_logprob(0)}, {"h": fake_logprob(1)}, {"e": fake_logprob(2)}],
        "text_offset": [0, 1, 2],
    }


async def test_explicit_nulls_mean_the_defaults(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    nulls = dict.fromkeys(
        ["n", "stream", "echo", "ignore_eos", "temperature", "top_p", "stop", "logprobs", "seed"]
    )
    response = await client.post("/v1/completions", json=completion(max_tokens=2, **nulls))
    assert response.status_code == 200
    assert last_params(engine) == SamplingParams(max_tokens=2)
    response = await client.post("/v1/chat/completions", json=chat(max_tokens=2, top_logprobs=None, **nulls))
    assert response.status_code == 200
    assert last_params(engine) == SamplingParams(max_tokens=2)


async def test_long_texts_are_tokenized_off_the_event_loop_with_the_same_result() -> None:
    engine = FakeEngine("fake", max_model_len=20_000)
    app = create_app({"fake": engine})
    long_prompt = "abc" * 3000  # over INLINE_TEXT_CHARS: tokenized on the app's tokenizer thread
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.post("/v1/completions", json=completion(prompt=long_prompt, max_tokens=1))
        assert response.json()["usage"]["prompt_tokens"] == 9000
        response = await client.post("/v1/chat/completions", json=chat(long_prompt, max_tokens=1))
        assert response.status_code == 200
    assert engine.requests[0].prompt_token_ids == tuple(engine.tokenizer.encode(long_prompt))
    assert engine.tokenizer.chats[0][0]["content"] == long_prompt


# Chat.


async def test_chat_has_openais_shape_and_uses_the_chat_template(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Again"},
    ]
    response = await client.post(
        "/v1/chat/completions", json={"model": "fake", "messages": messages, "max_tokens": 4}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "fake"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": DEFAULT_REPLY[:4]},
            "logprobs": None,
            "finish_reason": "length",
        }
    ]
    rendered = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello\nthere"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Again"},
    ]
    assert engine.tokenizer.chats[-1] == rendered
    prompt = engine.tokenizer.encode(engine.tokenizer.render_chat(rendered))
    assert engine.requests[-1].prompt_token_ids == tuple(prompt)
    assert body["usage"]["prompt_tokens"] == len(prompt)
    assert body["usage"]["total_tokens"] == len(prompt) + 4


async def test_max_completion_tokens_wins_over_max_tokens(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    await client.post("/v1/chat/completions", json=chat(max_tokens=9, max_completion_tokens=3))
    assert last_params(engine).max_tokens == 3


async def test_chat_logprobs_with_top_logprobs(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    body = (
        await client.post("/v1/chat/completions", json=chat(max_tokens=1, logprobs=True, top_logprobs=2))
    ).json()
    assert last_params(engine).logprobs == 2
    lp = fake_logprob(0)
    assert body["choices"][0]["logprobs"] == {
        "content": [
            {
                "token": "T",
                "logprob": lp,
                "bytes": [84],
                "top_logprobs": [
                    {"token": "T", "logprob": lp, "bytes": [84]},
                    {"token": "U", "logprob": lp - 1, "bytes": [85]},
                ],
            }
        ]
    }
    await client.post("/v1/chat/completions", json=chat(max_tokens=1, logprobs=True))
    assert last_params(engine).logprobs == 0


# Errors.


def openai_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert SECRET not in error["message"]
    return error


# (id, path, body, status, param, text the message must contain)
BAD_REQUESTS: list[tuple[str, str, Any, int, str | None, str]] = [
    ("unknown-model", "/v1/completions", completion(model="nope"), 404, "model", "`nope` does not exist"),
    ("no-prompt", "/v1/completions", {"model": "fake"}, 400, "prompt", "prompt: Field required"),
    ("prompt-list", "/v1/completions", completion(prompt=[SECRET, "b"]), 400, "prompt", "list of prompts"),
    ("prompt-type", "/v1/completions", completion(prompt={"text": SECRET}), 400, "prompt", "token ids"),
    ("negative-id", "/v1/completions", completion(prompt=[1, -2]), 400, "prompt", "negative"),
    ("empty-prompt", "/v1/completions", completion(prompt=""), 400, "prompt", "must not be empty"),
    ("n", "/v1/completions", completion(n=2), 400, "n", "n > 1 is not supported"),
    ("chat-n", "/v1/chat/completions", chat(n=3), 400, "n", "n > 1 is not supported"),
    ("echo", "/v1/completions", completion(echo=True), 400, "echo", "echo is not supported"),
    ("best-of", "/v1/completions", completion(best_of=3), 400, "best_of", "not supported"),
    (
        "penalty",
        "/v1/completions",
        completion(presence_penalty=0.5),
        400,
        "presence_penalty",
        "not supported",
    ),
    (
        "max-tokens-0",
        "/v1/completions",
        completion(max_tokens=0),
        400,
        "max_tokens",
        "max_tokens must be at least 1",
    ),
    ("max-tokens-type", "/v1/completions", completion(max_tokens="many"), 400, "max_tokens", "max_tokens:"),
    (
        "temperature",
        "/v1/completions",
        completion(temperature=-0.1),
        400,
        "temperature",
        "temperature must be",
    ),
    ("top-p-0", "/v1/completions", completion(top_p=0), 400, "top_p", "top_p must be in (0, 1]"),
    ("top-p-big", "/v1/completions", completion(top_p=1.5), 400, "top_p", "top_p must be in (0, 1]"),
    ("top-k", "/v1/completions", completion(top_k=-5), 400, "top_k", "top_k must be at least 0"),
    ("logprobs", "/v1/completions", completion(logprobs=21), 400, "logprobs", "logprobs must be"),
    ("empty-stop", "/v1/completions", completion(stop=["x", ""]), 400, "stop", "must not be empty"),
    (
        "too-long-with-max-tokens",
        "/v1/completions",
        completion(prompt="x" * 200, max_tokens=100),
        400,
        "max_tokens",
        "maximum context length is 256 tokens. However, you requested 300 tokens (200 in the prompt, 100",
    ),
    (
        "too-long",
        "/v1/completions",
        completion(prompt="x" * 256),
        400,
        "prompt",
        "maximum context length is 256 tokens, and the prompt is 256 tokens",
    ),
    (
        "stream-options",
        "/v1/completions",
        completion(stream_options={"include_usage": True}),
        400,
        "stream_options",
        "",
    ),
    ("no-messages", "/v1/chat/completions", {"model": "fake"}, 400, "messages", "messages: Field required"),
    ("empty-messages", "/v1/chat/completions", chat() | {"messages": []}, 400, "messages", "at least 1"),
    (
        "role",
        "/v1/chat/completions",
        {"model": "fake", "messages": [{"role": "robot", "content": "x"}]},
        400,
        "messages.0.role",
        "messages.0.role:",
    ),
    (
        "image",
        "/v1/chat/completions",
        chat([{"type": "image_url", "image_url": {"url": "x"}}]),
        400,
        "messages.0.content",
        "only text content parts",
    ),
    (
        "tools",
        "/v1/chat/completions",
        chat(tools=[{"type": "function"}]),
        400,
        "tools",
        "tools are not supported",
    ),
    (
        "json-mode",
        "/v1/chat/completions",
        chat(response_format={"type": "json_object"}),
        400,
        "response_format",
        "",
    ),
    ("top-logprobs", "/v1/chat/completions", chat(top_logprobs=2), 400, "top_logprobs", "needs logprobs"),
    (
        "chat-too-long",
        "/v1/chat/completions",
        chat("y" * 230, max_tokens=100),
        400,
        "max_tokens",
        "256 tokens",
    ),
    ("not-an-object", "/v1/completions", [1, 2], 400, None, "must be a JSON object"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "text"),
    [c[1:] for c in BAD_REQUESTS],
    ids=[c[0] for c in BAD_REQUESTS],
)
async def test_a_bad_request_gets_openais_error(
    client: httpx.AsyncClient,
    engine: FakeEngine,
    path: str,
    body: Any,
    status: int,
    param: str | None,
    text: str,
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == status, response.text
    error = openai_error(response)
    assert text in error["message"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert engine.requests == []  # refused before the engine
    assert (await client.post("/v1/completions", json=completion(max_tokens=1))).status_code == 200


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/completions", content=b'{"model": "fake", "prompt": "' + SECRET.encode()
    )
    assert response.status_code == 400
    assert "not valid JSON" in openai_error(response)["message"]


async def test_a_body_over_the_limit_is_413_by_its_length_or_by_what_arrives(
    client: httpx.AsyncClient,
) -> None:
    big = json.dumps(completion(prompt="x" * 5000)).encode()
    response = await client.post("/v1/completions", content=big)
    assert response.status_code == 413
    assert openai_error(response)["code"] == "request_too_large"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams in
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    response = await client.post("/v1/completions", content=chunked())
    assert response.status_code == 413
    v2 = await client.post("/v2/models/fake/generate", content=big)
    assert v2.status_code == 413
    assert v2.json() == {"error": "the request body is larger than 4096 bytes"}


@pytest.mark.parametrize("errors_at_call", [False, True], ids=["at-first-output", "at-call"])
@pytest.mark.parametrize(
    ("refusal", "status", "code", "retry_after"),
    [
        (QueueFullError("the waiting queue is full", retry_after_s=2), 429, "queue_full", "2"),
        (EngineNotReadyError("stopping", retry_after_s=7), 503, "engine_not_ready", "7"),
        (InvalidRequestError("the prompt (9 tokens) is longer than 8"), 400, None, None),
    ],
    ids=["queue-full", "not-ready", "invalid"],
)
async def test_engine_refusals_map_to_status_codes(
    client: httpx.AsyncClient,
    engine: FakeEngine,
    refusal: Exception,
    status: int,
    code: str | None,
    retry_after: str | None,
    errors_at_call: bool,
) -> None:
    engine.errors_at_call = errors_at_call
    engine.refuse_with = refusal  # type: ignore[assignment]
    for stream in (False, True):
        response = await client.post("/v1/completions", json=completion(stream=stream))
        assert response.status_code == status
        assert response.headers.get("retry-after") == retry_after
        error = openai_error(response)
        assert error["message"] == str(refusal)
        assert error["code"] == code
        v2 = await client.post("/v2/models/fake/generate", json={"text_input": "Hi"})
        assert v2.status_code == status
        assert v2.json() == {"error": str(refusal)}
    engine.refuse_with = None
    assert (await client.post("/v1/completions", json=completion(max_tokens=1))).status_code == 200


async def test_a_model_still_loading_is_503_before_any_work(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    engine.is_ready = False
    response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert openai_error(response)["type"] == "server_error"
    assert engine.tokenizer.chats == []


async def test_an_engine_abort_is_503_not_a_short_answer(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    engine.abort_after = 3
    response = await client.post("/v1/completions", json=completion(max_tokens=10))
    assert response.status_code == 503
    assert openai_error(response)["code"] == "aborted"


async def test_bad_requests_do_not_disturb_good_ones_running_beside_them(client: httpx.AsyncClient) -> None:
    good = [client.post("/v1/completions", json=completion(max_tokens=8)) for _ in range(5)]
    bad = [client.post("/v1/completions", json=completion(top_p=3)) for _ in range(5)]
    malformed = [client.post("/v1/completions", content=b"{") for _ in range(5)]
    responses = await asyncio.gather(*good, *bad, *malformed)
    assert [r.status_code for r in responses] == [200] * 5 + [400] * 10
    assert {r.json()["choices"][0]["text"] for r in responses[:5]} == {DEFAULT_REPLY[:8]}


async def test_unknown_routes_answer_in_the_route_familys_form(client: httpx.AsyncClient) -> None:
    openai = await client.get("/v1/nothing")
    assert openai.status_code == 404
    assert openai_error(openai)["message"] == "Not Found"
    v2 = await client.post("/v2/models/fake/nothing")
    assert v2.status_code == 404
    assert v2.json() == {"error": "Not Found"}
    assert (await client.get("/v1/completions")).status_code == 405


async def test_payloads_are_never_logged(
    client: httpx.AsyncClient, engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine.reply = f"reply {SECRET}"
    caplog.set_level(logging.DEBUG)
    await client.post("/v1/completions", json=completion(prompt=SECRET))
    await client.post("/v1/completions", json=completion(prompt=SECRET, top_p=9))
    await client.post("/v1/chat/completions", json=chat(SECRET, stream=True))
    engine.refuse_with = QueueFullError("full")
    await client.post("/v1/completions", json=completion(prompt=SECRET))
    assert SECRET not in caplog.text


# Triton's generate extension.


async def test_generate_answers_in_tritons_shape(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    response = await client.post(
        "/v2/models/fake/generate",
        json={
            "id": "42",
            "text_input": "Hi",
            "parameters": {"max_tokens": 4, "temperature": 0, "stream": False},
        },
    )
    assert response.status_code == 200
    assert response.json() == {"id": "42", "model_name": "fake", "model_version": "1", "text_output": "The "}
    assert last_params(engine) == SamplingParams(max_tokens=4, temperature=0.0)


async def test_generate_takes_parameters_at_the_top_level_too(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    body = {
        "text_input": "Hi",
        "max_tokens": 9,
        "top_k": 5,
        "stop": ["lazy"],
        "parameters": {"max_tokens": 40},
    }
    response = await client.post("/v2/models/fake/versions/1/generate", json=body)
    assert response.json()["text_output"] == "The quick brown fox jumps over the "
    assert last_params(engine) == SamplingParams(max_tokens=40, top_k=5, stop=("lazy",))


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/nope/generate", {"text_input": "x"}, 404, "unknown model 'nope'"),
        (
            "/v2/models/fake/versions/2/generate",
            {"text_input": "x"},
            404,
            "unknown version '2' of model 'fake'",
        ),
        ("/v2/models/fake/generate", {"text": "x"}, 400, "text_input: Field required"),
        ("/v2/models/fake/generate", {"text_input": ""}, 400, "text_input must not be empty"),
        (
            "/v2/models/fake/generate",
            {"text_input": "x", "parameters": {"top_p": 0}},
            400,
            "top_p must be in",
        ),
        (
            "/v2/models/fake/generate",
            {"text_input": "x", "parameters": {"max_tokens": "a"}},
            400,
            "parameters.max_tokens:",
        ),
        (
            "/v2/models/fake/generate",
            {"text_input": "x", "parameters": {"stream": True}},
            400,
            "use generate_stream",
        ),
        ("/v2/models/fake/generate", {"text_input": "x", "max_tokens": 300}, 400, "maximum context length"),
    ],
)
async def test_generate_errors_in_v2s_form(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], status: int, message: str
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == status
    assert set(response.json()) == {"error"}
    assert message in response.json()["error"]


# Health and metrics.


async def test_health_follows_every_engines_readiness() -> None:
    first, second = FakeEngine("a"), FakeEngine("b", ready=False)
    app = create_app({"a": first, "b": second})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.get("/v2/health/live")).status_code == 200
        assert (await client.get("/v2/health/ready")).status_code == 503
        assert (await client.get("/health")).status_code == 503
        second.is_ready = True
        assert (await client.get("/v2/health/ready")).status_code == 200
        assert (await client.get("/health")).status_code == 200
        # With two models, a request must say which.
        response = await client.post("/v1/completions", json={"prompt": "x"})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "model"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_under_vllms_names(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    engine.tokens_per_step = 2
    await client.post("/v1/completions", json=completion(max_tokens=5))  # increments of 2, 2, 1 tokens
    await client.post("/v1/chat/completions", json=chat(max_tokens=50, stop="quick"))  # "The ": 2, 2
    await client.post("/v1/completions", json=completion(top_p=7))  # refused: not counted
    engine.add_preemptions(3)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    model = (("model_name", "fake"),)
    chat_prompt = len(engine.requests[-1].prompt_token_ids)
    expected = {
        "vllm:num_requests_running": 0,
        "vllm:num_requests_waiting": 0,
        "vllm:kv_cache_usage_perc": 0,
        "vllm:gpu_cache_usage_perc": 0,
        "vllm:prompt_tokens_total": 5 + chat_prompt,
        "vllm:generation_tokens_total": 5 + 4,  # "The " before the stop string
        "vllm:num_preemptions_total": 3,
        "vllm:prefix_cache_queries_total": 5 + chat_prompt,
        "vllm:gpu_prefix_cache_queries_total": 5 + chat_prompt,
        "vllm:prefix_cache_hits_total": 0,
        "vllm:gpu_prefix_cache_hits_total": 0,
        "vllm:time_to_first_token_seconds_count": 2,
        "vllm:inter_token_latency_seconds_count": 3 + 2,  # tokens after each first increment
        "vllm:time_per_output_token_seconds_count": 3 + 2,
        "vllm:e2e_request_latency_seconds_count": 2,
    }
    assert {name: got[(name, model)] for name in expected} == expected
    for reason, count in {"stop": 1, "length": 1, "abort": 0}.items():
        assert got[("vllm:request_success_total", (("finished_reason", reason), *model))] == count


async def test_kv_cache_usage_and_running_are_read_at_scrape_time(engine: FakeEngine) -> None:
    engine.hold(after_tokens=1)
    app = create_app({"fake": engine})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        pending = asyncio.ensure_future(
            client.post("/v1/completions", json=completion(prompt="x" * 40, max_tokens=3))
        )
        await engine.until_admitted()
        got = samples((await client.get("/metrics")).text)
        model = (("model_name", "fake"),)
        assert got[("vllm:num_requests_running", model)] == 1
        assert got[("vllm:kv_cache_usage_perc", model)] == 3 / 1024  # 41 tokens in blocks of 16
        engine.release()
        assert (await pending).status_code == 200


async def test_legacy_names_can_be_turned_off_and_metrics_serve_one_app() -> None:
    metrics = GenerativeMetrics(legacy_names=False)
    app = create_app({"fake": FakeEngine()}, metrics=metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        await client.post("/v1/completions", json=completion(max_tokens=3))
        text = (await client.get("/metrics")).text
    assert "vllm:inter_token_latency_seconds_count" in text
    assert "vllm:kv_cache_usage_perc" in text
    for old in ("time_per_output_token", "gpu_cache_usage_perc", "gpu_prefix_cache"):
        assert old not in text
    with pytest.raises(ValueError, match="one GenerativeMetrics per app"):
        create_app({"fake": FakeEngine()}, metrics=metrics)
