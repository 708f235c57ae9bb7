"""The router's OpenAI API (``/v1``) in front of fake generative runtimes, reached with the official
``openai`` client (sync and async, streamed and not), httpx and raw sockets.

The router runs as a process (``modelplane router --discovery static``) with routes marked
``generative`` in its file; the backends (:class:`FakeOpenAIBackend`) stream server-sent events
with a pause the test controls, report vLLM's load gauges on ``/metrics`` and count prompt-prefix
cache hits. Scale from zero runs an in-process router whose table the test hands over.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from modelplane.api.metrics import ROUTER_CONCURRENCY_SECONDS, ROUTER_IN_FLIGHT, ROUTER_REQUESTS
from modelplane.serving.router.balancing import Backend, Endpoint
from modelplane.serving.router.discovery import ApplyRoutes
from modelplane.serving.router.routes import ModelRoute
from modelplane.serving.router.server import Router, RouterSettings
from modelplane.testing.router import FakeOpenAIBackend, RouterProcess, metric_sum, write_routes

MAX_BODY = 65536


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, FakeOpenAIBackend]]:
    """``a`` and ``b`` serve everything; ``c`` and ``d`` only the least-loaded route (their gauges
    are set by the test)."""
    started: dict[str, FakeOpenAIBackend] = {}
    try:
        for name in ("a", "b", "c", "d"):
            started[name] = FakeOpenAIBackend(name).start()
        yield started
    finally:
        for backend in started.values():
            backend.stop()


def _at(*backends: FakeOpenAIBackend, weight: int = 100) -> list[dict[str, Any]]:
    return [{"version": "1", "http": backend.url, "weight": weight} for backend in backends]


@pytest.fixture(scope="module")
def router(
    backends: dict[str, FakeOpenAIBackend], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RouterProcess]:
    base = tmp_path_factory.mktemp("router-openai")
    a, b, c, d = (backends[k] for k in "abcd")
    routes = write_routes(
        base / "routes.yaml",
        {
            # Clients say "llm"; the runtime serves the model as "served-llm".
            "llm": {"generative": True, "backendModel": "served-llm", "endpoints": _at(a)},
            "plain": _at(a),  # a V2-style entry: /v1 works too, balanced by in-flight requests
            "affine": {"generative": True, "prefixAffinity": True, "endpoints": _at(a, b)},
            "spread": {"generative": True, "endpoints": _at(a, b)},
            "balanced": {"generative": True, "endpoints": _at(c, d)},
            "drained": _at(a, weight=0),  # no version takes traffic: 503, not scaled to zero
        },
    )
    process = RouterProcess(
        base / "router.log", routes=routes, extra_args=["--max-body-bytes", str(MAX_BODY)]
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def client(router: RouterProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)


def async_client(router: RouterProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)


# -- the official client, unchanged -----------------------------------------------------------------


def test_the_sync_client_completes_and_streams_with_the_name_it_used(
    router: RouterProcess, backends: dict[str, FakeOpenAIBackend]
) -> None:
    with client(router) as sync:
        completion = sync.completions.create(model="llm", prompt="Say hello")
        assert completion.choices[0].text == "Hello world"
        assert completion.model == "llm"  # the runtime said "served-llm": put back
        assert backends["a"].requests[-1]["model"] == "served-llm"
        chunks = list(
            sync.chat.completions.create(
                model="llm", messages=[{"role": "user", "content": "Say hello"}], stream=True
            )
        )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello world"
    assert {c.model for c in chunks} == {"llm"}


async def test_the_async_client_completes_and_streams(router: RouterProcess) -> None:
    async with async_client(router) as client_:
        chat = await client_.chat.completions.create(
            model="plain", messages=[{"role": "user", "content": "Say hello"}]
        )
        assert chat.choices[0].message.content == "Hello world"
        assert chat.model == "plain"
        stream = await client_.completions.create(model="llm", prompt="Say hello", stream=True)
        texts = [chunk.choices[0].text async for chunk in stream]
    assert "".join(texts) == "Hello world"


def test_models_lists_what_is_routable_in_openais_shape(router: RouterProcess) -> None:
    with client(router) as sync:
        ids = [model.id for model in sync.models.list()]
        assert ids == ["affine", "balanced", "llm", "plain", "spread"]  # not "drained": it takes no traffic
        assert sync.models.retrieve("llm").owned_by == "modelplane"
        with pytest.raises(openai.NotFoundError):
            sync.models.retrieve("nope")
    listing = httpx.get(router.url + "/ns/team/v1/models").json()
    assert listing["object"] == "list"
    assert listing["data"][0] == {"id": "affine", "object": "model", "created": 0, "owned_by": "modelplane"}


# -- refusals in OpenAI's form ----------------------------------------------------------------------


def _error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_refusals_take_openais_error_form(router: RouterProcess) -> None:
    with client(router) as sync, pytest.raises(openai.NotFoundError) as unknown:
        sync.completions.create(model="nope", prompt="x")
    assert unknown.value.code == "model_not_found"
    url = router.url + "/v1/completions"
    missing = httpx.post(url, json={"prompt": "x"})
    assert missing.status_code == 400
    assert _error(missing)["param"] == "model"
    not_json = httpx.post(url, content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 400
    assert _error(not_json)["type"] == "invalid_request_error"
    drained = httpx.post(url, json={"model": "drained", "prompt": "x"})
    assert drained.status_code == 503
    assert drained.headers["retry-after"]
    assert _error(drained)["type"] == "server_error"
    too_large = httpx.post(url, json={"model": "llm", "prompt": "x" * (MAX_BODY + 1)})
    assert too_large.status_code == 413
    assert _error(too_large)["type"] == "invalid_request_error"
    v2 = httpx.post(router.url + "/v2/models/nope/infer", json={})
    assert v2.status_code == 404
    assert isinstance(v2.json()["error"], str)  # V2 keeps its own form


def _until_idle(router: RouterProcess, model: str) -> None:
    """Wait until the router counts nothing in flight for ``model`` (a stream ends just after its
    last event reaches the client)."""
    deadline = time.monotonic() + 10
    while router.metric(ROUTER_IN_FLIGHT, model=model) != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert router.metric(ROUTER_IN_FLIGHT, model=model) == 0


# -- streaming: no buffering, in flight for its whole length, closed when its client leaves ----------


def test_the_first_event_arrives_while_the_backend_is_still_generating(
    router: RouterProcess, backends: dict[str, FakeOpenAIBackend]
) -> None:
    a, prompt = backends["a"], "PAUSE: first event"
    with client(router) as sync:
        stream = sync.completions.create(model="llm", prompt=prompt, stream=True)
        events = iter(stream)
        first = next(events)  # the backend now waits for release: only an unbuffered relay gets here
        assert first.choices[0].text == "Hello"
        assert first.model == "llm"
        assert a.started(prompt).wait(10)  # set just after it wrote the event
        assert not a.finished(prompt).is_set()
        # The open stream counts as in flight (the autoscaler's signal) for as long as it lasts.
        assert router.metric(ROUTER_IN_FLIGHT, model="llm") == 1
        a.release(prompt)
        rest = list(events)
    assert [chunk.choices[0].text for chunk in rest] == [" world"]
    assert a.finished(prompt).is_set()
    _until_idle(router, "llm")
    assert router.metric(ROUTER_REQUESTS, model="llm", code="200") >= 1
    assert router.metric(ROUTER_CONCURRENCY_SECONDS, model="llm") > 0


def test_a_client_that_leaves_mid_stream_closes_the_backends_connection(
    router: RouterProcess, backends: dict[str, FakeOpenAIBackend]
) -> None:
    a, prompt = backends["a"], "PAUSE: leaving early"
    body = {"model": "llm", "prompt": prompt, "stream": True}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", router.url + "/v1/completions", json=body) as answer,
    ):
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers["transfer-encoding"] == "chunked"
        first = next(answer.iter_lines())
        assert json.loads(first.removeprefix("data: "))["model"] == "llm"
        assert a.started(prompt).wait(10)
    # The client closed its connection: the router closes the backend's, and the backend's
    # handler is cancelled while it still waits (a runtime aborts the sequence there).
    assert a.disconnected(prompt).wait(10)
    assert not a.finished(prompt).is_set()
    _until_idle(router, "llm")


def test_a_raw_http_10_client_gets_a_stream_delimited_by_the_close(router: RouterProcess) -> None:
    body = json.dumps({"model": "llm", "prompt": "raw", "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert rest.endswith(b"data: [DONE]\n\n")
    assert rest.count(b'"model":"llm"') == 2


# -- balancing ---------------------------------------------------------------------------------------


def _wait_for_reading(router: RouterProcess, backend: FakeOpenAIBackend, waiting: float) -> None:
    key = f"1@{backend.url}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = router.metrics_text()
        if metric_sum(text, "modelplane_router_backend_requests_waiting", endpoint=key) == waiting and (
            f'endpoint="{key}"' in text
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"the router did not read waiting={waiting} from {key}")


def _served_by(router: RouterProcess, count: int) -> list[str]:
    served = []
    with httpx.Client(timeout=30) as http:
        for i in range(count):
            answer = http.post(router.url + "/v1/completions", json={"model": "balanced", "prompt": f"q{i}"})
            assert answer.status_code == 200
            served.append(answer.json()["served_by"])
    return served


def test_least_loaded_sends_requests_to_the_shorter_waiting_queue(
    router: RouterProcess, backends: dict[str, FakeOpenAIBackend]
) -> None:
    c, d = backends["c"], backends["d"]
    c.waiting, d.waiting = 5, 0
    c.running = d.running = 2
    _wait_for_reading(router, c, 5)
    _wait_for_reading(router, d, 0)
    assert _served_by(router, 10) == ["d"] * 10
    c.waiting, d.waiting = 0, 7
    _wait_for_reading(router, c, 0)
    _wait_for_reading(router, d, 7)
    assert _served_by(router, 10) == ["c"] * 10
    assert c.metrics_reads > 0
    assert d.metrics_reads > 0


# -- prefix affinity ---------------------------------------------------------------------------------


def _hit_rate(router: RouterProcess, backends: dict[str, FakeOpenAIBackend], model: str) -> float:
    rng = random.Random(11)
    prefixes = [f"System prompt {p}: " + f"you are assistant number {p}. " * 12 for p in range(8)]
    requests = [(p, q) for p in range(8) for q in range(8)]
    rng.shuffle(requests)
    with client(router) as sync:
        for p, q in requests:
            sync.completions.create(model=model, prompt=prefixes[p] + f"Question {q}?")
    hits = sum(backends[k].hit_rate(model)[0] for k in "ab")
    total = sum(backends[k].hit_rate(model)[1] for k in "ab")
    assert total == len(requests)
    return hits / total


def test_prefix_affinity_raises_the_cache_hit_rate(
    router: RouterProcess, backends: dict[str, FakeOpenAIBackend]
) -> None:
    off = _hit_rate(router, backends, "spread")
    on = _hit_rate(router, backends, "affine")
    print(f"\nprefix cache hit rate over 64 requests from 8 prefixes, 2 backends: off {off:.3f}, on {on:.3f}")
    assert on > off
    assert on == 56 / 64  # each prefix missed once, on the one backend it maps to


# -- scale from zero -----------------------------------------------------------------------------------


class HandDiscovery:
    """A discovery source the test drives: tables handed over by hand, activations recorded."""

    def __init__(self, first: dict[str, ModelRoute]) -> None:
        self.first = first
        self.apply: ApplyRoutes | None = None
        self.woken = asyncio.Event()

    async def start(self, apply: ApplyRoutes) -> None:
        self.apply = apply
        apply(self.first)

    async def stop(self) -> None:
        pass

    async def activate(self, model: str) -> None:
        self.woken.set()


def _llm(endpoints: list[Endpoint]) -> ModelRoute:
    return ModelRoute(
        "default/llm",
        [Backend("1", 100)],
        {"1": endpoints} if endpoints else {},
        scaled_to_zero=True,
        backend_model="served-llm",
        generative=True,
    )


async def test_a_streaming_request_waits_for_a_model_scaled_to_zero(
    backends: dict[str, FakeOpenAIBackend], tmp_path: Path
) -> None:
    a = backends["a"]
    discovery = HandDiscovery({"default/llm": _llm([])})
    router = Router(discovery, RouterSettings(queue_timeout_s=30.0, drain_timeout_s=1.0))
    await router.start(host="127.0.0.1", port=0)
    try:
        base = f"http://127.0.0.1:{router.http_ports[0]}/v1"
        async with openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0) as client_:
            models = await client_.models.list()
            assert [m.id for m in models.data] == ["llm"]  # scaled to zero is routable: woken on demand
            waiting = asyncio.create_task(client_.completions.create(model="llm", prompt="cold", stream=True))
            await asyncio.wait_for(discovery.woken.wait(), timeout=10)
            assert router.load_report().queued == {"default/llm": 1.0}
            assert not waiting.done()
            assert discovery.apply is not None
            discovery.apply({"default/llm": _llm([Endpoint("a", a.url, None)])})  # the pod is ready
            stream = await asyncio.wait_for(waiting, timeout=10)
            chunks = [chunk async for chunk in stream]
    finally:
        await router.stop()
    assert "".join(c.choices[0].text for c in chunks) == "Hello world"
    assert {c.model for c in chunks} == {"llm"}
    assert a.requests[-1]["model"] == "served-llm"
