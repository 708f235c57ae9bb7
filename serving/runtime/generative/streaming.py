"""Responses that run a generation for as long as their client is there, and no longer.

Both kinds (one JSON body at the end, or server-sent events as the engine yields) are ASGI
responses that drive the generation themselves, next to a watcher of the connection: when the
client disconnects, the generation is cancelled and its iterators are closed at once, which aborts
the sequence in the engine (its batch slot and KV-cache blocks are freed) instead of computing
tokens nobody will read. Starlette's ``StreamingResponse`` is not enough: it may leave the body
iterator suspended (to be closed by the garbage collector, some time later) and does not cover the
non-streaming case, where a client can also give up on a long completion.

Both wait for the engine's first output before answering: the engine refuses a request (429, 503,
400) only before its first output, so the status code is known before the head is sent. A stream's
head and first event then go out together, as soon as the engine yields; each later increment is
one write (no buffering: ``Cache-Control: no-cache`` and ``X-Accel-Buffering: no`` for proxies).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from modelplane.serving.runtime.generative.http_errors import ApiError, ErrorFormat, from_generation_error
from modelplane.serving.runtime.generative.types import GenerationError, GenerationOutput

JSON = "application/json"
EVENT_STREAM_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}
DONE = b"data: [DONE]\n\n"


def event(payload: Mapping[str, Any]) -> bytes:
    """One server-sent event carrying ``payload`` as JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def aborted_by_engine() -> ApiError:
    return ApiError(503, "the engine aborted the request", code="aborted", retry_after_s=1)


def internal_error() -> ApiError:
    return ApiError(500, "the server failed to serve this request", code="internal_error")


def _head(status: int, headers: Mapping[str, str]) -> dict[str, Any]:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return {"type": "http.response.start", "status": status, "headers": raw}


async def send_whole(send: Send, status: int, body: bytes, headers: Mapping[str, str]) -> None:
    await send(_head(status, {**headers, "content-length": str(len(body))}))
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, error: ApiError, error_format: ErrorFormat) -> None:
    await send_whole(send, error.status, error_format(error), {"content-type": JSON, **error.headers()})


async def _disconnected(receive: Receive) -> None:
    """Return when the client disconnects (the request body was read before the response ran)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _ClientBoundResponse(Response):
    """Runs :meth:`_produce` while the client is connected; cancels it when the client goes."""

    def __init__(self, outputs: AsyncGenerator[GenerationOutput, None], error_format: ErrorFormat) -> None:
        # No Response.__init__: this response writes its own head. FastAPI reads only these two.
        self.status_code = 200
        self.background = None
        self._outputs = outputs
        self._error_format = error_format

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        producer = asyncio.ensure_future(self._produce_closing(send))
        watcher = asyncio.ensure_future(_disconnected(receive))
        done: set[asyncio.Future[None]] = set()
        try:
            done, _ = await asyncio.wait((producer, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            producer.cancel()  # a no-op once it is done; else the client has gone (or we are cancelled)
            watcher.cancel()
            await asyncio.gather(producer, watcher, return_exceptions=True)
        if producer in done and not producer.cancelled() and (failure := producer.exception()) is not None:
            raise failure  # a bug of ours: the server logs it (and answers 500 if nothing was sent)

    async def _produce_closing(self, send: Send) -> None:
        async with contextlib.aclosing(self._outputs):
            await self._produce(send)

    async def _produce(self, send: Send) -> None:
        raise NotImplementedError


class CompletedResponse(_ClientBoundResponse):
    """One JSON body, built from every increment once the engine has finished."""

    def __init__(
        self,
        outputs: AsyncGenerator[GenerationOutput, None],
        error_format: ErrorFormat,
        build: Callable[[Sequence[GenerationOutput]], bytes],
    ) -> None:
        super().__init__(outputs, error_format)
        self._build = build

    async def _produce(self, send: Send) -> None:
        collected: list[GenerationOutput] = []
        try:
            async for output in self._outputs:
                collected.append(output)
        except GenerationError as exc:
            await send_error(send, from_generation_error(exc), self._error_format)
            return
        except Exception:  # an engine bug, logged with the request id by generation.run
            await send_error(send, internal_error(), self._error_format)
            return
        if not collected or not collected[-1].finished or collected[-1].finish_reason == "abort":
            await send_error(send, aborted_by_engine(), self._error_format)
            return
        await send_whole(send, 200, self._build(collected), {"content-type": JSON})


class EventFormatter(Protocol):
    """How one protocol frames a generation as server-sent events."""

    def head(self) -> Iterable[bytes]:
        """Events before the first increment (the chat role chunk)."""
        ...

    def increment(self, output: GenerationOutput) -> Iterable[bytes]:
        """Events for one increment; none for an increment that adds nothing visible."""
        ...

    def tail(self, last: GenerationOutput) -> Iterable[bytes]:
        """Events after a normal finish (finish chunk, usage, ``[DONE]``)."""
        ...

    def error(self, error: ApiError) -> Iterable[bytes]:
        """Events reporting a failure after the stream has started."""
        ...


class EventStreamResponse(_ClientBoundResponse):
    """Server-sent events, one write per increment, as the engine yields them."""

    def __init__(
        self,
        outputs: AsyncGenerator[GenerationOutput, None],
        error_format: ErrorFormat,
        events: EventFormatter,
    ) -> None:
        super().__init__(outputs, error_format)
        self._events = events

    async def _write(self, send: Send, frames: Iterable[bytes]) -> None:
        body = b"".join(frames)
        if body:
            await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _produce(self, send: Send) -> None:
        try:
            first = await anext(self._outputs, None)
        except GenerationError as exc:
            await send_error(send, from_generation_error(exc), self._error_format)
            return
        except Exception:  # an engine bug, logged with the request id by generation.run
            await send_error(send, internal_error(), self._error_format)
            return
        if first is None:
            await send_error(send, aborted_by_engine(), self._error_format)
            return
        await send(_head(200, EVENT_STREAM_HEADERS))
        error = await self._stream(send, first)
        await self._write(send, self._events.error(error) if error else ())
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, send: Send, first: GenerationOutput) -> ApiError | None:
        """Write every increment from ``first`` on, then the tail; the error that cut it short, if any."""
        output = first
        pending = list(self._events.head())  # goes out with the first increment, in one write
        while True:
            if output.finished and output.finish_reason == "abort":
                # What it generated before the abort is sent; the finish is reported as an error.
                unfinished = dataclasses.replace(output, finished=False, finish_reason=None)
                await self._write(send, [*pending, *self._events.increment(unfinished)])
                return aborted_by_engine()
            await self._write(send, [*pending, *self._events.increment(output)])
            pending = []
            try:
                following = await anext(self._outputs, None)
            except GenerationError as exc:
                return from_generation_error(exc)
            except Exception:  # an engine bug, logged with the request id by generation.run
                return internal_error()
            if following is None:
                break
            output = following
        if not output.finished:
            return aborted_by_engine()
        await self._write(send, self._events.tail(output))
        return None
