"""What the API layer and the generative engine exchange: the one contract between them.

The API layer (OpenAI endpoints, Triton's generate extension) turns HTTP requests into
:class:`SamplingParams` and prompt token ids, and streams :class:`GenerationOutput` increments
back; the engine schedules every sequence with continuous batching. Neither knows the other's
internals, so each is tested on its own (the API layer against a fake :class:`Engine`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

FinishReason = Literal["stop", "length", "abort"]


class GenerationError(Exception):
    """A request the engine cannot take; the API layer maps each kind to a status code."""


class InvalidRequestError(GenerationError):
    """Bad input (400): a prompt longer than the context, a parameter out of range."""


class QueueFullError(GenerationError):
    """The waiting queue is full (429, with ``retry_after_s``); nothing was queued."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineNotReadyError(GenerationError):
    """The model is still loading or the engine is stopping (503, with ``retry_after_s``)."""

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token, and when to stop. Validated by :meth:`check`."""

    max_tokens: int = 16
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0  # in (0, 1]
    top_k: int = 0  # 0: off
    seed: int | None = None  # reproducible sampling for this request
    stop: tuple[str, ...] = ()  # strings that end the output (not included in it)
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None  # None: none; n >= 0: the chosen token's and the top n alternatives'

    def check(self) -> None:
        """Raise :class:`InvalidRequestError` naming the first parameter out of range."""
        if self.max_tokens <= 0:
            raise InvalidRequestError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise InvalidRequestError(f"temperature must be at least 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InvalidRequestError(f"top_k must be at least 0 (0 turns it off), got {self.top_k}")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise InvalidRequestError(f"logprobs must be between 0 and 20, got {self.logprobs}")


@dataclass(frozen=True)
class TokenLogprob:
    """The chosen token's log-probability and the ``n`` most likely alternatives at that step."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class GenerationOutput:
    """What one engine step added to one request: new tokens and the text they complete.

    ``text`` is the detokenized increment (a token that ends inside a multi-byte character or a
    word piece holds its text back until it is complete); stop strings are cut, never sent.
    """

    request_id: str
    token_ids: tuple[int, ...]
    text: str
    prompt_tokens: int
    completion_tokens: int  # so far, this increment included
    finished: bool = False
    finish_reason: FinishReason | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    cached_prompt_tokens: int = 0  # prompt tokens served from the prefix cache


@dataclass(frozen=True)
class EngineStats:
    """A snapshot for the metrics: the figures vLLM exports, under the same meanings."""

    running: int = 0
    waiting: int = 0
    kv_blocks_total: int = 0
    kv_blocks_used: int = 0
    prefix_queries: int = 0  # prompt tokens looked up in the prefix cache, cumulative
    prefix_hits: int = 0  # of which found, cumulative
    preemptions: int = 0  # cumulative
    prompt_tokens: int = 0  # cumulative, prefilled
    generation_tokens: int = 0  # cumulative

    @property
    def kv_cache_usage(self) -> float:
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0


class Tokenizer(Protocol):
    """The model's tokenizer, as the API layer needs it."""

    eos_token_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The prompt for a chat, with the generation prompt appended (the model's template)."""
        ...


@dataclass(frozen=True)
class ModelInfo:
    """What ``GET /v1/models`` lists, and the limits requests are checked against."""

    name: str
    max_model_len: int  # prompt plus completion tokens
    created: int = 0  # Unix time the model was loaded
    owned_by: str = "modelplane"
    extra: dict[str, str] = field(default_factory=dict)


class Engine(Protocol):
    """A loaded generative model with its scheduler: many concurrent requests, one batch."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    @property
    def ready(self) -> bool: ...

    def generate(
        self, request_id: str, prompt_token_ids: Sequence[int], params: SamplingParams
    ) -> AsyncIterator[GenerationOutput]:
        """Queue the request and yield its increments until one is ``finished``.

        Raises :class:`InvalidRequestError` (prompt plus ``max_tokens`` beyond the context, an
        empty prompt), :class:`QueueFullError` or :class:`EngineNotReadyError` before yielding
        anything. Closing the iterator early (a client that went away) aborts the request at
        once: its sequence leaves the batch and its KV-cache blocks are freed.
        """
        ...

    def stats(self) -> EngineStats: ...
