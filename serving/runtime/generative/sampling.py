"""Pick each sequence's next token from its logits: greedy, temperature, top-k, top-p, seeds.

One call handles the whole step's batch, each row with its own parameters. Random rows use the
exponential race (``argmax(p / q)`` with ``q ~ Exp(1)``, an exact draw from ``p``): a seeded
request draws its noise from its own ``torch.Generator``, one vocabulary-sized vector per token,
so its output depends on its seed and prompt only, never on its batch mates.

Logprobs are the *raw* model distribution (``log_softmax`` of the logits before temperature,
top-k and top-p), as vLLM returns them by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from modelplane.serving.runtime.generative.sequence import Sample
from modelplane.serving.runtime.generative.types import SamplingParams, TokenLogprob

# Below this a temperature is greedy: dividing by it would only overflow (vLLM's threshold).
GREEDY_TEMPERATURE = 1e-5


def is_greedy(params: SamplingParams) -> bool:
    return params.temperature < GREEDY_TEMPERATURE


def apply_top_k_top_p(
    logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None
) -> torch.Tensor:
    """Set to -inf every logit outside each row's top-k and top-p (nucleus) set.

    ``top_k`` of 0 keeps everything; ties at the k-th value are all kept. The top-p set is the
    smallest set of most likely tokens whose probability reaches ``top_p`` (always one token at
    least), computed after top-k, as vLLM and Hugging Face do.
    """
    if top_k is None and top_p is None:
        return logits
    vocab = logits.shape[-1]
    ordered, order = logits.sort(dim=-1, descending=False)
    if top_k is not None:
        k = torch.where((top_k <= 0) | (top_k > vocab), vocab, top_k)
        kth = ordered.gather(1, (vocab - k).unsqueeze(1))
        ordered = ordered.masked_fill(ordered < kth, float("-inf"))
    if top_p is not None:
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1 - top_p).unsqueeze(1)
        drop[:, -1] = False
        ordered = ordered.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, ordered)


def _noise(
    rows: int,
    vocab: int,
    generators: Sequence[torch.Generator | None],
    shared: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    noise = torch.empty(rows, vocab, device=device)
    unseeded = [i for i, g in enumerate(generators) if g is None]
    if unseeded:
        noise[unseeded] = torch.empty(len(unseeded), vocab, device=device).exponential_(generator=shared)
    for i, generator in enumerate(generators):
        if generator is not None:
            noise[i].exponential_(generator=generator)
    return noise.clamp_(min=torch.finfo(noise.dtype).tiny)


def sample(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
    shared_generator: torch.Generator,
) -> list[Sample]:
    """One token per row of ``logits`` (float32, ``[rows, vocab]``), with logprobs where asked.

    ``generators[i]`` is row i's own generator (a seeded request) or None (the shared stream).
    """
    rows, vocab = logits.shape
    device = logits.device
    tokens = torch.empty(rows, dtype=torch.long, device=device)
    greedy = [i for i, p in enumerate(params) if is_greedy(p)]
    if greedy:
        tokens[greedy] = logits[greedy].argmax(dim=-1)
    rand = [i for i, p in enumerate(params) if not is_greedy(p)]
    if rand:
        chosen = [params[i] for i in rand]
        temperature = torch.tensor([p.temperature for p in chosen], device=device, dtype=logits.dtype)
        top_k = (
            torch.tensor([p.top_k for p in chosen], device=device) if any(p.top_k for p in chosen) else None
        )
        top_p = (
            torch.tensor([p.top_p for p in chosen], device=device, dtype=logits.dtype)
            if any(p.top_p < 1 for p in chosen)
            else None
        )
        scaled = apply_top_k_top_p(logits[rand] / temperature.unsqueeze(1), top_k, top_p)
        noise = _noise(len(rand), vocab, [generators[i] for i in rand], shared_generator, device)
        tokens[rand] = (scaled.softmax(dim=-1) / noise).argmax(dim=-1)
    token_ids: list[int] = tokens.tolist()
    return [
        Sample(token_id=t, logprob=lp)
        for t, lp in zip(token_ids, _logprobs(logits, tokens, token_ids, params), strict=True)
    ]


def _logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, token_ids: list[int], params: Sequence[SamplingParams]
) -> list[TokenLogprob | None]:
    wanted = [i for i, p in enumerate(params) if p.logprobs is not None]
    found: list[TokenLogprob | None] = [None] * len(params)
    if not wanted:
        return found
    raw = logits[wanted].log_softmax(dim=-1)
    chosen: list[float] = raw.gather(1, tokens[wanted].unsqueeze(1)).squeeze(1).tolist()
    most = max(params[i].logprobs or 0 for i in wanted)
    top_values, top_ids = raw.topk(most, dim=-1) if most else (raw[:, :0], raw[:, :0].long())
    values: list[list[float]] = top_values.tolist()
    ids: list[list[int]] = top_ids.tolist()
    for row, i in enumerate(wanted):
        n = params[i].logprobs or 0
        top = tuple(zip(ids[row][:n], values[row][:n], strict=True))
        found[i] = TokenLogprob(token_id=token_ids[i], logprob=chosen[row], top=top)
    return found
