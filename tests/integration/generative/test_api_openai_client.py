"""The official ``openai`` client, unchanged, against the generative API served by uvicorn on a
loopback port over the fake engine; and a plain httpx client on Triton's generate_stream.

Over a real socket, this also shows what an in-process transport cannot: a stream's events reach
the client while the engine is still generating (the fake engine holds mid-way until the test has
read the first events), and a client that closes its connection aborts the engine's sequence.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
import uvicorn

from modelplane.local.processes import free_port
from modelplane.serving.runtime.generative.api import create_app
from modelplane.serving.runtime.generative.types import Engine, EngineNotReadyError, QueueFullError
from modelplane.testing.fake_engine import DEFAULT_REPLY, FakeEngine


@dataclass
class Served:
    url: str
    engines: dict[str, Engine]  # the app's own mapping: a test swaps in a fresh engine


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    engines: dict[str, Engine] = {}
    port = free_port()
    config = uvicorn.Config(
        create_app(engines), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-generative", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn exited while starting"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield Served(f"http://127.0.0.1:{port}", engines)
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def engine(served: Served) -> Iterator[FakeEngine]:
    fresh = FakeEngine("fake", max_model_len=512)
    served.engines["fake"] = fresh
    yield fresh
    fresh.release()  # a test that failed while holding leaves no generation parked


@pytest.fixture
def client(served: Served, engine: FakeEngine) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture
def async_client(served: Served, engine: FakeEngine) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)


def test_models(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == ["fake"]
    assert models[0].owned_by == "modelplane"
    assert (models[0].model_extra or {})["max_model_len"] == 512
    assert client.models.retrieve("fake").id == "fake"


def test_completion(client: openai.OpenAI) -> None:
    result = client.completions.create(model="fake", prompt="Hello", max_tokens=9, temperature=0, user="u1")
    assert result.object == "text_completion"
    assert result.choices[0].text == DEFAULT_REPLY[:9]
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        5,
        9,
        14,
    )


def test_completion_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model="fake", prompt="Hello", max_tokens=7, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == DEFAULT_REPLY[:7]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 7


def test_chat(client: openai.OpenAI, engine: FakeEngine) -> None:
    result = client.chat.completions.create(
        model="fake",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        max_completion_tokens=5,
        stop=["brown"],
        seed=7,
    )
    assert result.object == "chat.completion"
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].message.content == DEFAULT_REPLY[:5]
    assert result.choices[0].finish_reason == "length"
    assert engine.tokenizer.chats[-1][1] == {"role": "user", "content": "Hello"}
    assert engine.requests[-1].params.seed == 7
    assert result.usage is not None
    assert result.usage.prompt_tokens == len(engine.requests[-1].prompt_token_ids)


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "Hello"}],
        stop="fox",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The quick brown "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len("The quick brown ")


async def test_async_client_streams_and_not_concurrently(async_client: openai.AsyncOpenAI) -> None:
    async with async_client:

        async def streamed_chat() -> str:
            stream = await async_client.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": "Hi"}], max_tokens=6, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        async def streamed_completion() -> str:
            stream = await async_client.completions.create(
                model="fake", prompt="Hi", max_tokens=6, stream=True
            )
            return "".join([c.choices[0].text async for c in stream if c.choices])

        async def chat() -> str:
            result = await async_client.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": "Hi"}], max_tokens=6
            )
            return result.choices[0].message.content or ""

        async def completion() -> str:
            return (
                (await async_client.completions.create(model="fake", prompt="Hi", max_tokens=6))
                .choices[0]
                .text
            )

        texts = await asyncio.gather(
            *[f() for f in (streamed_chat, streamed_completion, chat, completion) * 3]
        )
        assert set(texts) == {DEFAULT_REPLY[:6]}


def test_errors_raise_the_clients_exceptions(client: openai.OpenAI, engine: FakeEngine) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.completions.create(model="nope", prompt="x")
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match=r"n > 1 is not supported") as bad:
        client.completions.create(model="fake", prompt="x", n=2)
    assert bad.value.param == "n"
    with pytest.raises(openai.BadRequestError, match=r"maximum context length is 512 tokens"):
        client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "x"}], max_tokens=600
        )
    engine.refuse_with = QueueFullError("the waiting queue is full", retry_after_s=2)
    with pytest.raises(openai.RateLimitError) as limited:
        client.completions.create(model="fake", prompt="x", stream=True)
    assert limited.value.response.headers["retry-after"] == "2"
    engine.refuse_with = EngineNotReadyError("stopping")
    with pytest.raises(openai.InternalServerError) as unavailable:
        client.completions.create(model="fake", prompt="x")
    assert unavailable.value.status_code == 503
    engine.refuse_with = None
    assert client.completions.create(model="fake", prompt="x", max_tokens=1).choices[0].text == "T"


def test_stream_events_arrive_while_the_engine_is_still_generating(
    client: openai.OpenAI, engine: FakeEngine
) -> None:
    engine.hold(after_tokens=3)
    with client.completions.create(model="fake", prompt="Hello", max_tokens=10, stream=True) as stream:
        chunks = iter(stream)
        first = [next(chunks).choices[0].text for _ in range(3)]
        assert first == ["T", "h", "e"]
        assert engine.finished == []  # read before the engine could finish: nothing was buffered
        engine.release()
        rest = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(first + rest) == DEFAULT_REPLY[:10]


def test_closing_a_stream_aborts_the_engines_sequence(client: openai.OpenAI, engine: FakeEngine) -> None:
    engine.hold(after_tokens=2)
    stream = client.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "Hello"}], max_tokens=50, stream=True
    )
    assert next(iter(stream)).choices[0].delta.role == "assistant"
    stream.close()
    assert engine.wait_aborted(1, timeout=30)
    assert engine.aborted == [engine.requests[0].request_id]


def generate_stream_events(url: str, body: dict[str, object], engine: FakeEngine) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    with httpx.stream("POST", url, json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
                if len(events) == 2:
                    assert engine.finished == []  # the engine is held after 2 tokens
                    engine.release()
            else:
                assert line == ""
    return events


def test_generate_stream_over_httpx(served: Served, engine: FakeEngine) -> None:
    engine.hold(after_tokens=2)
    url = f"{served.url}/v2/models/fake/generate_stream"
    events = generate_stream_events(url, {"text_input": "Hi", "parameters": {"max_tokens": 8}}, engine)
    assert [e["text_output"] for e in events] == list(DEFAULT_REPLY[:8])
    assert {(e["model_name"], e["model_version"]) for e in events} == {("fake", "1")}
    once = httpx.post(
        f"{served.url}/v2/models/fake/generate", json={"text_input": "Hi", "max_tokens": 8}, timeout=30
    )
    assert once.json() == {"model_name": "fake", "model_version": "1", "text_output": DEFAULT_REPLY[:8]}


def test_leaving_generate_stream_aborts(served: Served, engine: FakeEngine) -> None:
    engine.hold(after_tokens=1)
    url = f"{served.url}/v2/models/fake/generate_stream"
    with httpx.stream("POST", url, json={"text_input": "Hi"}, timeout=30) as response:
        assert next(response.iter_lines()).startswith("data: ")
    assert engine.wait_aborted(1, timeout=30)


def test_health_and_metrics(served: Served, engine: FakeEngine) -> None:
    assert httpx.get(f"{served.url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{served.url}/health").status_code == 200
    engine.is_ready = False
    assert httpx.get(f"{served.url}/v2/health/ready").status_code == 503
    assert httpx.get(f"{served.url}/v2/health/live").status_code == 200
    metrics = httpx.get(f"{served.url}/metrics").text
    for name in (
        "vllm:num_requests_running",
        "vllm:time_to_first_token_seconds",
        "vllm:request_success_total",
    ):
        assert name in metrics
