"""A fake generative engine: the :class:`~modelplane.serving.runtime.generative.types.Engine`
protocol exactly, with deterministic text, so the API layer (and anything above it) is tested
without a model.

- :class:`FakeTokenizer` is character-level: one token per character, id = code point, so a test
  knows every count (``"hello"`` is 5 tokens). Its chat template renders ``<|role|>content\\n`` per
  message and ends with ``<|assistant|>``, and it records the messages it was given.
- :class:`FakeEngine` answers every prompt with :attr:`FakeEngine.reply` (a string, or a function
  of the prompt and the params), cut at the first stop string (``finish_reason`` "stop"), at
  ``max_tokens`` ("length"), or at its end (as an end-of-sequence token: "stop", unless
  ``ignore_eos``, when the reply repeats). It yields ``tokens_per_step`` tokens per increment,
  after ``first_token_delay_s`` and ``token_delay_s`` (0 by default: no test waits on a clock).
- Refusals as the real engine makes them, before the first output: an empty prompt or one too long
  for ``max_model_len`` (:class:`InvalidRequestError`), :attr:`FakeEngine.queue_full`
  (:class:`QueueFullError`), not :attr:`FakeEngine.ready` (:class:`EngineNotReadyError`), or any
  :attr:`FakeEngine.refuse_with`; at the first ``__anext__`` by default, at the call itself with
  ``errors_at_call`` (the protocol allows both). :attr:`FakeEngine.abort_after` ends requests
  with ``finish_reason`` "abort" after that many tokens, as an engine that is shutting down does.
- Observation: :attr:`FakeEngine.requests` records what each request asked for;
  :attr:`FakeEngine.aborted` the ids whose iterator was closed before they finished (a client that
  went away). :meth:`FakeEngine.until_admitted` and :meth:`FakeEngine.until_aborted` wait for
  requests on any event loop, :meth:`FakeEngine.wait_aborted` from another thread (a test driving a
  real server); nothing waits on a clock. :meth:`FakeEngine.hold` pauses every generation after a
  number of tokens until :meth:`FakeEngine.release`, so a test can act while a stream is provably
  mid-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from modelplane.serving.runtime.generative.types import (
    Engine,
    EngineNotReadyError,
    EngineStats,
    FinishReason,
    GenerationError,
    GenerationOutput,
    InvalidRequestError,
    ModelInfo,
    QueueFullError,
    SamplingParams,
    Tokenizer,
    TokenLogprob,
)

DEFAULT_REPLY = "The quick brown fox jumps over the lazy dog."
BLOCK_SIZE = 16  # tokens per simulated KV-cache block

Reply = str | Callable[[Sequence[int], SamplingParams], str]


class FakeTokenizer:
    """One token per character; ``eos_token_id`` 0 (the NUL character, never in a reply)."""

    eos_token_id: int | None = 0

    def __init__(self) -> None:
        self.chats: list[list[dict[str, str]]] = []

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(t) for t in token_ids)

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        return "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages) + "<|assistant|>"

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> list[int]:
        self.chats.append([dict(m) for m in messages])
        return self.encode(self.render_chat(messages))


@dataclass(frozen=True)
class FakeRequest:
    """What one call of :meth:`FakeEngine.generate` asked for."""

    request_id: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams


def fake_logprob(index: int) -> float:
    """The chosen token's log-probability at output position ``index`` (deterministic)."""
    return -0.25 * (1 + index % 4)


class _Hold:
    """Pause generations after ``after_tokens`` tokens until released, from any thread."""

    def __init__(self, after_tokens: int) -> None:
        self.after_tokens = after_tokens
        self._lock = threading.Lock()
        self._released = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def wait(self) -> None:
        event = asyncio.Event()
        with self._lock:
            if self._released:
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()

    def release(self) -> None:
        with self._lock:
            self._released = True
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile has nobody waiting
                loop.call_soon_threadsafe(event.set)


class _Tally:
    """A count that threads and event loops can wait on (a test may drive a server in another thread)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.value = 0
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Event]] = []

    def add(self) -> None:
        with self._changed:
            self.value += 1
            self._changed.notify_all()
            due = [w for w in self._waiters if w[0] <= self.value]
            self._waiters = [w for w in self._waiters if w[0] > self.value]
        for _, loop, event in due:
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile has nobody waiting
                loop.call_soon_threadsafe(event.set)

    def wait(self, target: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.value >= target, timeout)

    async def wait_async(self, target: int) -> None:
        event = asyncio.Event()
        with self._changed:
            if self.value >= target:
                return
            self._waiters.append((target, asyncio.get_running_loop(), event))
        await event.wait()


class FakeEngine:
    """A deterministic :class:`Engine` with configurable delays, refusals and observation."""

    def __init__(
        self,
        name: str = "fake",
        *,
        max_model_len: int = 2048,
        reply: Reply = DEFAULT_REPLY,
        tokens_per_step: int = 1,
        first_token_delay_s: float = 0.0,
        token_delay_s: float = 0.0,
        ready: bool = True,
        errors_at_call: bool = False,
        kv_blocks_total: int = 1024,
        created: int = 1_700_000_000,
    ) -> None:
        self._info = ModelInfo(name=name, max_model_len=max_model_len, created=created)
        self._tokenizer = FakeTokenizer()
        self.reply = reply
        self.tokens_per_step = tokens_per_step
        self.first_token_delay_s = first_token_delay_s
        self.token_delay_s = token_delay_s
        self.is_ready = ready
        self.queue_full = False
        self.refuse_with: GenerationError | None = None  # raised at admission, whatever else holds
        self.abort_after: int | None = None  # end requests with finish_reason "abort" after this many tokens
        self.errors_at_call = errors_at_call  # refuse when generate() is called, not at the first output
        self.waiting = 0  # reported in stats(); the fake queues nothing
        self.kv_blocks_total = kv_blocks_total
        self.requests: list[FakeRequest] = []
        self.aborted: list[str] = []
        self.finished: list[str] = []
        self._admitted = _Tally()
        self._aborts = _Tally()
        self._hold: _Hold | None = None
        self._running: dict[str, int] = {}  # request id -> tokens held in the KV cache
        self._stats = EngineStats()
        self._last_prompt: tuple[int, ...] = ()

    # The Engine protocol.

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def tokenizer(self) -> FakeTokenizer:
        return self._tokenizer

    @property
    def ready(self) -> bool:
        return self.is_ready

    def generate(
        self, request_id: str, prompt_token_ids: Sequence[int], params: SamplingParams
    ) -> AsyncIterator[GenerationOutput]:
        if self.errors_at_call:
            self._admit(request_id, prompt_token_ids, params)
            return self._run(request_id, tuple(prompt_token_ids), params, admitted=True)
        return self._run(request_id, tuple(prompt_token_ids), params, admitted=False)

    def stats(self) -> EngineStats:
        used = sum(-(-tokens // BLOCK_SIZE) for tokens in self._running.values())
        return EngineStats(
            running=len(self._running),
            waiting=self.waiting,
            kv_blocks_total=self.kv_blocks_total,
            kv_blocks_used=min(used, self.kv_blocks_total),
            prefix_queries=self._stats.prefix_queries,
            prefix_hits=self._stats.prefix_hits,
            preemptions=self._stats.preemptions,
            prompt_tokens=self._stats.prompt_tokens,
            generation_tokens=self._stats.generation_tokens,
        )

    # Test controls.

    def hold(self, after_tokens: int) -> None:
        """Pause every generation once it has produced ``after_tokens`` tokens (0: before the first
        output, as a queued request waits) until :meth:`release`."""
        self._hold = _Hold(after_tokens)

    def release(self) -> None:
        if self._hold is not None:
            self._hold.release()

    def wait_aborted(self, request_count: int = 1, timeout: float = 10.0) -> bool:
        """Block (a thread) until ``request_count`` requests were aborted; False on timeout."""
        return self._aborts.wait(request_count, timeout)

    async def until_aborted(self, request_count: int = 1) -> None:
        """Wait (on any loop) until ``request_count`` requests were aborted."""
        await self._aborts.wait_async(request_count)

    async def until_admitted(self, request_count: int = 1) -> None:
        """Wait (on any loop) until ``request_count`` requests were admitted (are in :attr:`requests`)."""
        await self._admitted.wait_async(request_count)

    def add_preemptions(self, count: int) -> None:
        self._stats = _bump(self._stats, preemptions=count)

    def reply_text(self, prompt_token_ids: Sequence[int], params: SamplingParams) -> str:
        """The whole text this engine would produce for the prompt, before any cut."""
        text = self.reply(prompt_token_ids, params) if callable(self.reply) else self.reply
        if params.ignore_eos and text:
            text = text * (params.max_tokens // len(text) + 1)
        return text

    # Internals.

    def _admit(self, request_id: str, prompt: Sequence[int], params: SamplingParams) -> None:
        if self.refuse_with is not None:
            raise self.refuse_with
        if not self.is_ready:
            raise EngineNotReadyError("the model is loading", retry_after_s=3)
        if self.queue_full:
            raise QueueFullError("the waiting queue is full", retry_after_s=2)
        if not prompt:
            raise InvalidRequestError("the prompt is empty")
        params.check()
        if len(prompt) + params.max_tokens > self._info.max_model_len:
            raise InvalidRequestError(
                f"the prompt ({len(prompt)} tokens) plus max_tokens ({params.max_tokens}) is more than "
                f"the model's context of {self._info.max_model_len} tokens"
            )
        self.requests.append(FakeRequest(request_id, tuple(prompt), params))
        self._admitted.add()

    def _plan(self, prompt: tuple[int, ...], params: SamplingParams) -> tuple[str, FinishReason]:
        text = self.reply_text(prompt, params)
        cut = min((i for s in params.stop if (i := text.find(s)) >= 0), default=-1)
        if 0 <= cut < params.max_tokens:
            return text[:cut], "stop"
        if len(text) > params.max_tokens:
            return text[: params.max_tokens], "length"
        return text, "length" if len(text) == params.max_tokens else "stop"

    async def _run(
        self, request_id: str, prompt: tuple[int, ...], params: SamplingParams, *, admitted: bool
    ) -> AsyncGenerator[GenerationOutput, None]:
        if not admitted:
            self._admit(request_id, prompt, params)
        text, reason = self._plan(prompt, params)
        if self.abort_after is not None and self.abort_after < len(text):
            text, reason = text[: self.abort_after], "abort"
        self._count_prompt(prompt)
        self._running[request_id] = len(prompt)
        done = False
        try:
            if self.first_token_delay_s:
                await asyncio.sleep(self.first_token_delay_s)
            ids = self._tokenizer.encode(text)
            sent = 0
            while True:
                hold = self._hold
                if hold is not None and sent >= hold.after_tokens:
                    await hold.wait()
                step = ids[sent : sent + self.tokens_per_step]
                sent += len(step)
                last = sent >= len(ids)
                self._running[request_id] = len(prompt) + sent
                self._stats = _bump(self._stats, generation_tokens=len(step))
                done = last
                yield GenerationOutput(
                    request_id=request_id,
                    token_ids=tuple(step),
                    text=self._tokenizer.decode(step),
                    prompt_tokens=len(prompt),
                    completion_tokens=sent,
                    finished=last,
                    finish_reason=reason if last else None,
                    logprobs=self._logprobs(step, sent - len(step), params),
                )
                if last:
                    return
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
        finally:
            self._running.pop(request_id, None)
            if done:
                self.finished.append(request_id)
            else:
                self.aborted.append(request_id)
                self._aborts.add()

    def _logprobs(self, step: Sequence[int], start: int, params: SamplingParams) -> tuple[TokenLogprob, ...]:
        if params.logprobs is None:
            return ()
        return tuple(
            TokenLogprob(
                token_id=token,
                logprob=fake_logprob(start + i),
                top=tuple((token + k, fake_logprob(start + i) - k) for k in range(params.logprobs)),
            )
            for i, token in enumerate(step)
        )

    def _count_prompt(self, prompt: tuple[int, ...]) -> None:
        # Prefix-cache figures as a paged cache counts them: whole blocks shared with the last prompt.
        shared = 0
        for a, b in zip(prompt, self._last_prompt, strict=False):
            if a != b:
                break
            shared += 1
        hits = shared // BLOCK_SIZE * BLOCK_SIZE
        self._last_prompt = prompt
        self._stats = _bump(
            self._stats, prefix_queries=len(prompt), prefix_hits=hits, prompt_tokens=len(prompt)
        )


def _bump(stats: EngineStats, **deltas: int) -> EngineStats:
    return dataclasses.replace(
        stats, **{name: getattr(stats, name) + delta for name, delta in deltas.items()}
    )


def _conforms(engine: FakeEngine, tokenizer: FakeTokenizer) -> tuple[Engine, Tokenizer]:
    """Never called: mypy checks here that the fakes implement the protocols exactly."""
    return engine, tokenizer
