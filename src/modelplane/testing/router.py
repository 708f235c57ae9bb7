"""The router as a real process for tests and benchmarks: ``modelplane router`` on free loopback ports.

Tests reach it only over HTTP and gRPC, so they exercise what users get (uvicorn, the gRPC server,
the discovery source). ``metric()`` reads one of its Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from aiohttp import web

from modelplane.local.processes import die_with_parent, free_port


def infer_body(x: np.ndarray) -> dict[str, Any]:
    """A V2 JSON inference request carrying ``x`` as the FP32 input ``INPUT__0``."""
    return {
        "inputs": [
            {"name": "INPUT__0", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
        ]
    }


def output_of(response: httpx.Response) -> np.ndarray:
    """The first output of a V2 JSON inference response, as an array of its shape."""
    output = response.json()["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def write_routes(path: Path, models: Mapping[str, Sequence[Mapping[str, Any]] | Mapping[str, Any]]) -> Path:
    """Write a static routes file (``models: {NAME: [{version, http, grpc, weight, shadow}]}``; a
    model may be a mapping ``{endpoints: [...], generative, prefixAffinity, backendModel}``)."""
    document = {
        name: dict(entries) if isinstance(entries, Mapping) else list(entries)
        for name, entries in models.items()
    }
    path.write_text(yaml.safe_dump({"models": document}))
    return path


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of metric ``name`` in Prometheus text ``text`` that carry ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        sample = head.split("{", 1)[0]
        if sample != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


@dataclass
class RouterProcess:
    """``modelplane router`` in a subprocess; ``stop()`` sends SIGTERM and waits."""

    log_path: Path
    discovery: str = "static"
    routes: Path | None = None
    extra_args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout_s: float = 60.0) -> RouterProcess:
        command = [
            sys.executable, "-m", "modelplane", "router",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--grpc-port", str(self.grpc_port),
            "--discovery", self.discovery,
            *(["--routes", str(self.routes)] if self.routes is not None else []),
            *self.extra_args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the router exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop(timeout_s=5.0)  # never leave a half-started router behind
        raise RuntimeError(f"the router did not become ready in {timeout_s}s:\n{self.log_tail()}")

    def metrics_text(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=5.0).text

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples (matching ``labels``) from the router's /metrics."""
        return metric_sum(self.metrics_text(), name, **labels)

    def routable(self) -> list[dict[str, Any]]:
        """The router's ``/v2/models`` listing."""
        listing: list[dict[str, Any]] = httpx.get(self.url + "/v2/models", timeout=5.0).json()
        return listing

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait for exit (kill after ``timeout_s``); returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process is not None else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class FakeOpenAIBackend:
    """A generative runtime's OpenAI API, faked in a thread of its own (aiohttp): for router tests.

    - ``POST /v1/completions`` and ``/v1/chat/completions`` answer JSON, or server-sent events when
      ``"stream": true`` (two pieces of text, then ``data: [DONE]``), echoing the request's ``model``
      as a runtime echoes its served name. A prompt (or first user message) starting ``PAUSE:``
      streams its first event, then waits for :meth:`release` of that prompt before the rest;
      :meth:`started`, :meth:`finished` and :meth:`disconnected` tell the test where it is.
    - Each request's prompt prefix (its first ``prefix_chars`` characters) counts as a cache hit
      when this backend has seen it before for the same model (``hits``/``misses`` by model).
    - ``GET /metrics`` reports ``waiting``, ``running`` and ``kv_cache`` as vLLM's gauges.
    """

    def __init__(self, name: str = "backend", prefix_chars: int = 256) -> None:
        self.name = name
        self.prefix_chars = prefix_chars
        self.port = 0
        self.requests: list[dict[str, Any]] = []
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}
        self.metrics_reads = 0
        self.waiting = 0.0
        self.running = 0.0
        self.kv_cache = 0.0
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._events: dict[tuple[str, str], threading.Event] = {}
        self._gates: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _event(self, kind: str, prompt: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault((kind, prompt), threading.Event())

    def started(self, prompt: str) -> threading.Event:
        """Set once the paused stream of ``prompt`` has sent its first event."""
        return self._event("started", prompt)

    def finished(self, prompt: str) -> threading.Event:
        """Set once the stream of ``prompt`` has sent its last event."""
        return self._event("finished", prompt)

    def disconnected(self, prompt: str) -> threading.Event:
        """Set when the router closed the connection of ``prompt``'s paused stream."""
        return self._event("disconnected", prompt)

    def release(self, prompt: str) -> None:
        """Let the paused stream of ``prompt`` go on."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(lambda: self._gate(prompt).set())

    def _gate(self, prompt: str) -> asyncio.Event:
        return self._gates.setdefault(prompt, asyncio.Event())

    def hit_rate(self, model: str) -> tuple[int, int]:
        """(hits, requests) for ``model`` on this backend."""
        hits = self.hits.get(model, 0)
        return hits, hits + self.misses.get(model, 0)

    # -- the server ---------------------------------------------------------------------------------

    def start(self) -> FakeOpenAIBackend:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._serve())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-openai-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake OpenAI backend did not start")
        return self

    def stop(self) -> None:
        """Stop serving (again: nothing happens)."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_post("/v1/chat/completions", self._generate)
        app.router.add_get("/metrics", self._metrics)
        # Cancel a handler when its client leaves, as the runtime aborts a generation.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metrics_reads += 1
        text = (
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{model_name="m"}} {self.waiting}\n'
            f'vllm:num_requests_running{{model_name="m"}} {self.running}\n'
            f'vllm:kv_cache_usage_perc{{model_name="m"}} {self.kv_cache}\n'
        )
        return web.Response(text=text, content_type="text/plain")

    @staticmethod
    def prompt_of(payload: dict[str, Any]) -> str:
        if "messages" in payload:
            users = [m.get("content", "") for m in payload["messages"] if m.get("role") == "user"]
            return str(users[0]) if users else ""
        return str(payload.get("prompt", ""))

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        model = str(payload.get("model"))
        prompt = self.prompt_of(payload)
        self.requests.append(payload)
        prefix = (model, prompt[: self.prefix_chars])
        if prefix in self._seen:
            self.hits[model] = self.hits.get(model, 0) + 1
        else:
            self._seen.add(prefix)
            self.misses[model] = self.misses.get(model, 0) + 1
        chat = request.path.endswith("/chat/completions")
        pieces = ["Hello", " world"]
        if not payload.get("stream"):
            text = "".join(pieces)
            choice: dict[str, Any] = (
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                if chat
                else {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
            )
            return web.json_response(
                {
                    "id": "cmpl-1",
                    "object": "chat.completion" if chat else "text_completion",
                    "created": 0,
                    "model": model,
                    "choices": [choice],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
                    "served_by": self.name,
                }
            )
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
        )
        await response.prepare(request)
        try:
            for i, piece in enumerate(pieces):
                delta: dict[str, Any] = (
                    {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                    if chat
                    else {"index": 0, "text": piece, "finish_reason": None, "logprobs": None}
                )
                chunk = {
                    "id": "cmpl-1",
                    "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": 0,
                    "model": model,
                    "choices": [delta],
                }
                await response.write(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
                if i == 0 and prompt.startswith("PAUSE:"):
                    self.started(prompt).set()
                    await self._gate(prompt).wait()
            await response.write(b"data: [DONE]\n\n")
            self.finished(prompt).set()
        except (asyncio.CancelledError, ConnectionError):
            self.disconnected(prompt).set()
            raise
        await response.write_eof()
        return response
