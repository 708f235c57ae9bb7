"""OpenAI's request bodies (pydantic, validated) and response bodies (typed dicts, cheap to build).

Requests are validated once, so a model is worth its cost; responses are built per streamed chunk,
so they are plain dicts (typed for mypy) that ``orjson`` serialises directly. Unknown request fields
are ignored, as OpenAI and vLLM do, so clients that send newer options still work, and an explicit
``null`` means the default (some SDKs send every field); options that would change the answer and
are not implemented (``n > 1``, ``echo``, penalties, tools) are refused by name instead of silently
ignored (see :mod:`.prompting`).
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class SamplingFields(_Body):
    """What completions and chat share: the model, sampling, stopping and streaming."""

    model: str | None = None  # None: the only model served
    max_tokens: int | None = None  # None: the room the prompt leaves in the context
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # vLLM's extension; -1 or 0 turns it off
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None  # vLLM's extension
    ignore_eos: bool | None = None  # vLLM's extension
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = None  # None: 1
    user: str | None = None  # accepted and ignored
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None


class CompletionRequest(SamplingFields):
    prompt: str | list[int]
    logprobs: int | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        """A string or token ids; a batch of one is that one prompt, a larger batch is refused."""
        if isinstance(value, list) and value and isinstance(value[0], str | list):
            if len(value) > 1:
                raise ValueError("a list of prompts is not supported; send one prompt per request")
            value = value[0]
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
            if any(t < 0 for t in value):
                raise ValueError("token ids must not be negative")
            return value
        raise ValueError("must be a string or a list of token ids")


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        """A string, or a list of ``{"type": "text", "text": ...}`` parts joined by newlines (as vLLM)."""
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            texts: list[str] = []
            for part in value:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise ValueError("only text content parts are supported")
                text = part.get("text")
                if not isinstance(text, str):
                    raise ValueError("a text content part needs a string `text`")
                texts.append(text)
            return "\n".join(texts)
        raise ValueError("must be a string or a list of text content parts")


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None  # OpenAI's newer name for max_tokens; wins over it
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None


# Responses.


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int]


class CompletionLogprobs(TypedDict):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class TopLogprob(TypedDict):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(TypedDict):
    content: list[ChatTokenLogprob]


class CompletionChoice(TypedDict):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: str | None


class ChatMessageOut(TypedDict, total=False):
    role: str
    content: str


class ChatChoice(TypedDict):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None
    finish_reason: str | None


class ChatChunkChoice(TypedDict):
    index: int
    delta: ChatMessageOut
    logprobs: ChatLogprobs | None
    finish_reason: str | None


class _Envelope(TypedDict):
    id: str
    object: str
    created: int
    model: str


class CompletionBody(_Envelope):
    choices: list[CompletionChoice]
    usage: Usage


class ChatCompletionBody(_Envelope):
    choices: list[ChatChoice]
    usage: Usage


class CompletionChunk(_Envelope, total=False):
    choices: list[CompletionChoice]
    usage: Usage | None


class ChatCompletionChunk(_Envelope, total=False):
    choices: list[ChatChunkChoice]
    usage: Usage | None


class ModelCard(TypedDict):
    id: str
    object: str
    created: int
    owned_by: str
    root: str
    parent: str | None
    max_model_len: int
