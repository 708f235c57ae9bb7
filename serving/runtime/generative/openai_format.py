"""Engine increments in OpenAI's response shapes: whole bodies, stream chunks and logprobs.

The shapes are OpenAI's own (``text_completion`` / ``chat.completion`` / ``chat.completion.chunk``),
so the official clients parse them unchanged. Streams follow OpenAI's order: for chat, a first chunk
with ``delta.role``, then ``delta.content`` pieces, then a chunk with an empty delta and the
``finish_reason``; for completions, the increment that finishes carries the ``finish_reason``; then,
with ``stream_options.include_usage``, a chunk with empty ``choices`` and the ``usage`` (every
earlier chunk carries ``"usage": null``); then ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from modelplane.serving.runtime.generative.http_errors import ApiError, openai_error_body
from modelplane.serving.runtime.generative.openai_schemas import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionBody,
    ChatCompletionChunk,
    ChatLogprobs,
    ChatMessageOut,
    ChatTokenLogprob,
    CompletionBody,
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    TopLogprob,
    Usage,
)
from modelplane.serving.runtime.generative.streaming import DONE, event
from modelplane.serving.runtime.generative.types import GenerationOutput, Tokenizer, TokenLogprob

#: -inf is not JSON; vLLM reports an impossible token at this floor, and so does this API.
LOGPROB_FLOOR = -9999.0


def _logprob(value: float) -> float:
    return max(value, LOGPROB_FLOOR)


@dataclass(frozen=True)
class Envelope:
    """What every body and chunk of one response repeats."""

    id: str
    created: int
    model: str


def usage(last: GenerationOutput) -> Usage:
    return {
        "prompt_tokens": last.prompt_tokens,
        "completion_tokens": last.completion_tokens,
        "total_tokens": last.prompt_tokens + last.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": last.cached_prompt_tokens},
    }


@dataclass
class TokenTexts:
    """Each token's own text (for logprobs), decoded once per token id per request."""

    tokenizer: Tokenizer
    _texts: dict[int, str] = field(default_factory=dict)

    def __call__(self, token_id: int) -> str:
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self.tokenizer.decode([token_id])
        return text


def completion_logprobs(
    entries: Sequence[TokenLogprob], texts: TokenTexts, offset: int
) -> CompletionLogprobs:
    """The legacy completions form; ``top_logprobs`` holds the chosen token and its alternatives."""
    result: CompletionLogprobs = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for entry in entries:
        token = texts(entry.token_id)
        result["tokens"].append(token)
        result["token_logprobs"].append(_logprob(entry.logprob))
        top = {token: _logprob(entry.logprob)}
        for alternative, logprob in entry.top:
            top.setdefault(texts(alternative), _logprob(logprob))
        result["top_logprobs"].append(top)
        result["text_offset"].append(offset)
        offset += len(token)
    return result


def _top(token: str, logprob: float) -> TopLogprob:
    return {"token": token, "logprob": _logprob(logprob), "bytes": list(token.encode("utf-8"))}


def chat_logprobs(entries: Sequence[TokenLogprob], texts: TokenTexts) -> ChatLogprobs:
    content: list[ChatTokenLogprob] = []
    for entry in entries:
        token = texts(entry.token_id)
        content.append(
            {
                **_top(token, entry.logprob),
                "top_logprobs": [_top(texts(alternative), logprob) for alternative, logprob in entry.top],
            }
        )
    return {"content": content}


def _finish(output: GenerationOutput) -> str | None:
    return output.finish_reason if output.finished else None


def completion_body(
    envelope: Envelope, outputs: Sequence[GenerationOutput], texts: TokenTexts | None
) -> CompletionBody:
    last = outputs[-1]
    logprobs = None
    if texts is not None:
        logprobs = completion_logprobs([e for o in outputs for e in o.logprobs], texts, 0)
    choice: CompletionChoice = {
        "index": 0,
        "text": "".join(o.text for o in outputs),
        "logprobs": logprobs,
        "finish_reason": _finish(last),
    }
    return {
        "id": envelope.id,
        "object": "text_completion",
        "created": envelope.created,
        "model": envelope.model,
        "choices": [choice],
        "usage": usage(last),
    }


def chat_body(
    envelope: Envelope, outputs: Sequence[GenerationOutput], texts: TokenTexts | None
) -> ChatCompletionBody:
    last = outputs[-1]
    logprobs = None
    if texts is not None:
        logprobs = chat_logprobs([e for o in outputs for e in o.logprobs], texts)
    choice: ChatChoice = {
        "index": 0,
        "message": {"role": "assistant", "content": "".join(o.text for o in outputs)},
        "logprobs": logprobs,
        "finish_reason": _finish(last),
    }
    return {
        "id": envelope.id,
        "object": "chat.completion",
        "created": envelope.created,
        "model": envelope.model,
        "choices": [choice],
        "usage": usage(last),
    }


@dataclass
class CompletionEvents:
    """``text_completion`` chunks (see the module's docstring for the order)."""

    envelope: Envelope
    texts: TokenTexts | None  # None: no logprobs asked for
    include_usage: bool
    _offset: int = 0

    def _chunk(self, choices: list[CompletionChoice]) -> bytes:
        chunk: CompletionChunk = {
            "id": self.envelope.id,
            "object": "text_completion",
            "created": self.envelope.created,
            "model": self.envelope.model,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None
        return event(chunk)

    def head(self) -> Iterable[bytes]:
        return ()

    def increment(self, output: GenerationOutput) -> Iterable[bytes]:
        if not output.text and not output.finished and not (self.texts and output.logprobs):
            return ()
        logprobs = None
        if self.texts is not None:
            logprobs = completion_logprobs(output.logprobs, self.texts, self._offset)
            self._offset += sum(len(t) for t in logprobs["tokens"])
        choice: CompletionChoice = {
            "index": 0,
            "text": output.text,
            "logprobs": logprobs,
            "finish_reason": _finish(output),
        }
        return (self._chunk([choice]),)

    def tail(self, last: GenerationOutput) -> Iterable[bytes]:
        if not self.include_usage:
            return (DONE,)
        chunk: CompletionChunk = {
            "id": self.envelope.id,
            "object": "text_completion",
            "created": self.envelope.created,
            "model": self.envelope.model,
            "choices": [],
            "usage": usage(last),
        }
        return (event(chunk), DONE)

    def error(self, error: ApiError) -> Iterable[bytes]:
        return (b"data: " + openai_error_body(error) + b"\n\n", DONE)


@dataclass
class ChatEvents:
    """``chat.completion.chunk`` chunks (see the module's docstring for the order)."""

    envelope: Envelope
    texts: TokenTexts | None  # None: no logprobs asked for
    include_usage: bool

    def _chunk(self, choices: list[ChatChunkChoice], usage_: Usage | None = None) -> bytes:
        chunk: ChatCompletionChunk = {
            "id": self.envelope.id,
            "object": "chat.completion.chunk",
            "created": self.envelope.created,
            "model": self.envelope.model,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = usage_
        return event(chunk)

    def _choice(self, delta: ChatMessageOut, finish_reason: str | None = None) -> ChatChunkChoice:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def head(self) -> Iterable[bytes]:
        return (self._chunk([self._choice({"role": "assistant", "content": ""})]),)

    def increment(self, output: GenerationOutput) -> Iterable[bytes]:
        frames: list[bytes] = []
        if output.text or (self.texts and output.logprobs):
            choice = self._choice({"content": output.text})
            if self.texts is not None:
                choice["logprobs"] = chat_logprobs(output.logprobs, self.texts)
            frames.append(self._chunk([choice]))
        if output.finished:
            frames.append(self._chunk([self._choice({}, output.finish_reason)]))
        return frames

    def tail(self, last: GenerationOutput) -> Iterable[bytes]:
        if not self.include_usage:
            return (DONE,)
        return (self._chunk([], usage(last)), DONE)

    def error(self, error: ApiError) -> Iterable[bytes]:
        return (b"data: " + openai_error_body(error) + b"\n\n", DONE)
