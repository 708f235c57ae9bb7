"""From a validated request to what the engine takes: the model, the prompt's token ids, the params.

The checks here are the API layer's own: options it does not implement are refused by name (a
silently ignored ``n`` or ``echo`` would return a different answer than the client asked for), and
the context length is checked before the request reaches the engine's queue, so the error names
both lengths. ``max_tokens`` defaults to the room the prompt leaves in the context, as vLLM does.

Tokenizing a long text takes milliseconds; above :data:`INLINE_TEXT_CHARS` it runs on the app's
one tokenizer thread (a single thread, because Hugging Face's fast tokenizers are not safe to call
concurrently), so the event loop keeps streaming other requests meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from modelplane.serving.runtime.generative.http_errors import bad_request, model_not_found
from modelplane.serving.runtime.generative.openai_schemas import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    SamplingFields,
)
from modelplane.serving.runtime.generative.types import (
    Engine,
    InvalidRequestError,
    ModelInfo,
    SamplingParams,
    Tokenizer,
)

INLINE_TEXT_CHARS = 4096
_CHECKED_FIELDS = frozenset({"max_tokens", "temperature", "top_p", "top_k", "logprobs"})

_T = TypeVar("_T")


def find_engine(engines: Mapping[str, Engine], name: str | None) -> tuple[str, Engine]:
    """The engine serving ``name``; with one model served, ``name`` may be left out (as vLLM allows)."""
    if name is None:
        if len(engines) == 1:
            return next(iter(engines.items()))
        raise bad_request("model is required: this server serves more than one model", param="model")
    engine = engines.get(name)
    if engine is None:
        raise model_not_found(name)
    return name, engine


class TokenizerThread:
    """Runs long tokenizer calls on one worker thread, created on first use."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, size: int, call: Callable[[], _T]) -> _T:
        if size <= INLINE_TEXT_CHARS:
            return call()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenizer")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


async def encode_prompt(
    tokenizer: Tokenizer, prompt: str | list[int], thread: TokenizerThread, field_name: str = "prompt"
) -> list[int]:
    """Token ids as given, or the text encoded; 400 when there are none."""
    ids = (
        prompt
        if isinstance(prompt, list)
        else await thread.run(len(prompt), lambda: tokenizer.encode(prompt))
    )
    if not ids:
        raise bad_request(f"{field_name} must not be empty", param=field_name)
    return ids


def _template_role(role: str) -> str:
    # OpenAI's "developer" is the system message under a new name; most chat templates know only "system".
    return "system" if role == "developer" else role


async def chat_prompt(
    tokenizer: Tokenizer, messages: Sequence[ChatMessage], thread: TokenizerThread
) -> list[int]:
    """The conversation rendered by the model's chat template, generation prompt included."""
    turns = [{"role": _template_role(m.role), "content": m.content} for m in messages]
    size = sum(len(m.content) for m in messages)
    try:
        ids = await thread.run(size, lambda: tokenizer.apply_chat_template(turns))
    except InvalidRequestError as exc:
        raise bad_request(str(exc), param="messages") from None
    except Exception as exc:
        # A template refusing a conversation (roles that do not alternate, say) raises whatever its
        # Jinja code raises; it is this request's fault, and its message describes the structure.
        raise bad_request(
            f"the model's chat template rejected the messages: {exc}", param="messages"
        ) from None
    if not ids:
        raise bad_request("the chat template produced an empty prompt", param="messages")
    return ids


def _refuse_unsupported(request: SamplingFields) -> None:
    if request.n is not None and request.n != 1:
        raise bad_request("n > 1 is not supported" if request.n > 1 else "n must be 1", param="n")
    if request.presence_penalty:
        raise bad_request("presence_penalty is not supported", param="presence_penalty")
    if request.frequency_penalty:
        raise bad_request("frequency_penalty is not supported", param="frequency_penalty")
    if request.logit_bias:
        raise bad_request("logit_bias is not supported", param="logit_bias")
    if request.stream_options is not None and not request.stream:
        raise bad_request("stream_options is only allowed when stream is true", param="stream_options")


def _stop(stop: str | list[str] | None) -> tuple[str, ...]:
    strings = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if any(not s for s in strings):
        raise bad_request("stop strings must not be empty", param="stop")
    return strings


def sampling_params(
    info: ModelInfo,
    prompt_tokens: int,
    *,
    max_tokens: int | None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    seed: int | None = None,
    stop: str | list[str] | None = None,
    stop_token_ids: Sequence[int] | None = None,
    ignore_eos: bool = False,
    logprobs: int | None = None,
) -> SamplingParams:
    """Checked :class:`SamplingParams` for a prompt of ``prompt_tokens`` tokens (400 on any problem)."""
    room = info.max_model_len - prompt_tokens
    if max_tokens is None and room < 1:
        raise bad_request(
            f"This model's maximum context length is {info.max_model_len} tokens, and the prompt is "
            f"{prompt_tokens} tokens: no room is left for the completion.",
            param="prompt",
        )
    params = SamplingParams(
        max_tokens=room if max_tokens is None else max_tokens,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        top_k=0 if top_k is None or top_k == -1 else top_k,  # vLLM's -1 means off, as 0 does here
        seed=seed,
        stop=_stop(stop),
        stop_token_ids=tuple(stop_token_ids or ()),
        ignore_eos=ignore_eos,
        logprobs=logprobs,
    )
    try:
        params.check()
    except InvalidRequestError as exc:
        message = str(exc)
        named = message.split(" ", 1)[0]  # check()'s messages begin with the parameter's name
        raise bad_request(message, param=named if named in _CHECKED_FIELDS else None) from None
    if max_tokens is not None and prompt_tokens + max_tokens > info.max_model_len:
        raise bad_request(
            f"This model's maximum context length is {info.max_model_len} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} for the "
            "completion). Please reduce the prompt or max_tokens.",
            param="max_tokens",
        )
    return params


def completion_params(request: CompletionRequest, info: ModelInfo, prompt_tokens: int) -> SamplingParams:
    _refuse_unsupported(request)
    if request.echo:
        raise bad_request("echo is not supported", param="echo")
    if request.best_of is not None and request.best_of != 1:
        raise bad_request("best_of is not supported", param="best_of")
    if request.suffix:
        raise bad_request("suffix is not supported", param="suffix")
    return sampling_params(
        info,
        prompt_tokens,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        seed=request.seed,
        stop=request.stop,
        stop_token_ids=request.stop_token_ids,
        ignore_eos=bool(request.ignore_eos),
        logprobs=request.logprobs,
    )


def check_chat_request(request: ChatCompletionRequest) -> None:
    """Refusals that need no prompt, so they come before the chat template runs."""
    _refuse_unsupported(request)
    if request.tools:
        raise bad_request("tools are not supported", param="tools")
    if request.tool_choice not in (None, "none"):
        raise bad_request("tool_choice is not supported", param="tool_choice")
    if request.response_format is not None and request.response_format.get("type") != "text":
        raise bad_request("only the text response_format is supported", param="response_format")
    if request.top_logprobs is not None and not request.logprobs:
        raise bad_request("top_logprobs needs logprobs set to true", param="top_logprobs")


def chat_params(request: ChatCompletionRequest, info: ModelInfo, prompt_tokens: int) -> SamplingParams:
    max_tokens = (
        request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
    )
    return sampling_params(
        info,
        prompt_tokens,
        max_tokens=max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        seed=request.seed,
        stop=request.stop,
        stop_token_ids=request.stop_token_ids,
        ignore_eos=bool(request.ignore_eos),
        logprobs=(request.top_logprobs or 0) if request.logprobs else None,
    )
