"""The generative API's streams over the fake engine: server-sent event framing for OpenAI's
completions and chat and for Triton's generate_stream, errors before and during a stream, and a
client that disconnects, which must close the engine's iterator (the fake records the abort).

The disconnect tests drive the ASGI app directly, so that the test decides exactly when the client
goes: after the first event, while the request still waits for its first token, or during a
non-streamed completion.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from modelplane.serving.runtime.generative.api import create_app
from modelplane.serving.runtime.generative.metrics import GenerativeMetrics
from modelplane.serving.runtime.generative.types import QueueFullError
from modelplane.testing.fake_engine import DEFAULT_REPLY, FakeEngine, fake_logprob


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine("fake", max_model_len=256)


@pytest.fixture
async def client(engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app({"fake": engine})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


def events(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of a server-sent event stream, checking its framing on the way."""
    assert response.text.endswith("\n\n")
    payloads = []
    for block in response.text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        assert "\n" not in block
        payloads.append(block.removeprefix("data: "))
    return payloads


def openai_chunks(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON chunks of an OpenAI stream, which must end with exactly one ``[DONE]``."""
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    payloads = events(response)
    assert payloads[-1] == "[DONE]"
    assert "[DONE]" not in payloads[:-1]
    return [json.loads(p) for p in payloads[:-1]]


async def test_completion_stream_framing(client: httpx.AsyncClient) -> None:
    body = {"model": "fake", "prompt": "Hello", "max_tokens": 6, "stream": True}
    chunks = openai_chunks(await client.post("/v1/completions", json=body))
    assert len(chunks) == 6  # one token each
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["id"].startswith("cmpl-")
    assert all("usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == DEFAULT_REPLY[:6]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 5 + ["length"]
    assert chunks[0]["choices"][0] == {"index": 0, "text": "T", "logprobs": None, "finish_reason": None}


async def test_completion_stream_with_usage_and_logprobs(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    engine.tokens_per_step = 2
    body = {
        "model": "fake",
        "prompt": "Hello",
        "max_tokens": 3,
        "logprobs": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = openai_chunks(await client.post("/v1/completions", json=body))
    *text_chunks, usage_chunk = chunks
    assert all(c["usage"] is None for c in text_chunks)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert [c["choices"][0]["logprobs"]["text_offset"] for c in text_chunks] == [[0, 1], [2]]
    assert text_chunks[1]["choices"][0]["logprobs"]["token_logprobs"] == [fake_logprob(2)]


async def test_chat_stream_framing(client: httpx.AsyncClient) -> None:
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_completion_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = openai_chunks(await client.post("/v1/chat/completions", json=body))
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["id"].startswith("chatcmpl-")
    role, *content, finish, usage = chunks
    assert role["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    assert "".join(c["choices"][0]["delta"]["content"] for c in content) == DEFAULT_REPLY[:3]
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    assert finish["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 3
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_chat_stream_logprobs_ride_with_their_content(client: httpx.AsyncClient) -> None:
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 2,
        "logprobs": True,
        "top_logprobs": 1,
        "stream": True,
    }
    chunks = openai_chunks(await client.post("/v1/chat/completions", json=body))
    content = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert [c["choices"][0]["logprobs"]["content"][0]["token"] for c in content] == ["T", "h"]
    assert all("usage" not in c for c in chunks)


async def test_a_stream_the_engine_refuses_gets_a_status_not_a_stream(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    engine.refuse_with = QueueFullError("the waiting queue is full", retry_after_s=3)
    response = await client.post("/v1/completions", json={"model": "fake", "prompt": "x", "stream": True})
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["message"] == "the waiting queue is full"


async def test_an_engine_abort_mid_stream_is_an_error_event(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    engine.abort_after = 2
    body = {"model": "fake", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 9, "stream": True}
    chunks = openai_chunks(await client.post("/v1/chat/completions", json=body))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "Th"
    assert chunks[-1]["error"]["code"] == "aborted"
    v2 = await client.post("/v2/models/fake/generate_stream", json={"text_input": "x", "max_tokens": 9})
    assert [json.loads(p) for p in events(v2)][-1] == {"error": "the engine aborted the request"}


async def test_generate_stream_sends_each_increment(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    engine.tokens_per_step = 4
    response = await client.post(
        "/v2/models/fake/generate_stream", json={"text_input": "Hi", "parameters": {"max_tokens": 10}}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    payloads = [json.loads(p) for p in events(response)]  # no [DONE] in Triton's stream
    assert payloads == [
        {"model_name": "fake", "model_version": "1", "text_output": text} for text in ("The ", "quic", "k ")
    ]


async def test_generate_stream_errors_in_v2s_form(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    response = await client.post("/v2/models/nope/generate_stream", json={"text_input": "x"})
    assert response.status_code == 404
    assert response.json() == {"error": "unknown model 'nope'"}
    engine.refuse_with = QueueFullError("full", retry_after_s=1)
    response = await client.post("/v2/models/fake/generate_stream", json={"text_input": "x"})
    assert response.status_code == 429
    assert response.json() == {"error": "full"}


# Disconnects, with the app driven directly.


async def drive(
    app: Any, path: str, body: dict[str, Any], leave: Callable[[asyncio.Event], Awaitable[object]]
) -> list[dict[str, Any]]:
    """Run one request; the client disconnects once ``leave`` (given an event set by the app's
    first body write) returns. Returns the messages the app sent."""
    raw = json.dumps(body).encode()
    sent: list[dict[str, Any]] = []
    wrote = asyncio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await leave(wrote)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            wrote.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    # A guard, not a timing assertion: a response that ignored the disconnect would hang here.
    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    return sent


def body_bytes(sent: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"model": "fake", "prompt": "Hello", "max_tokens": 20, "stream": True}),
        (
            "/v1/chat/completions",
            {"model": "fake", "messages": [{"role": "user", "content": "Hi"}], "stream": True},
        ),
        ("/v2/models/fake/generate_stream", {"text_input": "Hi"}),
    ],
    ids=["completions", "chat", "generate_stream"],
)
async def test_a_client_leaving_mid_stream_closes_the_engines_iterator(
    engine: FakeEngine, path: str, body: dict[str, Any]
) -> None:
    engine.hold(after_tokens=2)  # the stream is provably mid-way when the client leaves
    metrics = GenerativeMetrics()
    app = create_app({"fake": engine}, metrics=metrics)
    sent = await drive(app, path, body, lambda wrote: wrote.wait())
    assert engine.aborted == [engine.requests[0].request_id]
    assert engine.finished == []
    assert sent[0]["status"] == 200
    assert body_bytes(sent).startswith(b"data: ")
    assert (
        'vllm:request_success_total{finished_reason="abort",model_name="fake"} 1.0'
        in metrics.exposition().decode()
    )
    engine.release()


async def test_a_client_leaving_while_its_request_waits_aborts_it(engine: FakeEngine) -> None:
    engine.hold(after_tokens=0)  # as a request queued behind a full batch: no output yet
    app = create_app({"fake": engine})
    body = {"model": "fake", "prompt": "Hi", "stream": True}
    sent = await drive(app, "/v1/completions", body, lambda _: engine.until_admitted())
    assert engine.aborted == [engine.requests[0].request_id]
    assert sent == []  # nothing was answered: the status was never known
    engine.release()


async def test_a_client_leaving_a_non_streamed_completion_aborts_it(engine: FakeEngine) -> None:
    engine.hold(after_tokens=3)
    app = create_app({"fake": engine})
    body = {"model": "fake", "messages": [{"role": "user", "content": "Hi"}]}
    sent = await drive(app, "/v1/chat/completions", body, lambda _: engine.until_admitted())
    assert engine.aborted == [engine.requests[0].request_id]
    assert sent == []
    engine.release()


async def test_a_finished_stream_is_not_counted_as_aborted(engine: FakeEngine) -> None:
    app = create_app({"fake": engine})
    body = {"model": "fake", "prompt": "Hi", "max_tokens": 4, "stream": True}
    sent = await drive(app, "/v1/completions", body, lambda _: asyncio.Event().wait())  # stays connected
    assert body_bytes(sent).endswith(b"data: [DONE]\n\n")
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert engine.aborted == []
    assert engine.finished == [engine.requests[0].request_id]
