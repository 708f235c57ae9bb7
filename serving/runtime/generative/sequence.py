"""One request's token state as the scheduler and the block manager see it (no torch).

A sequence is its token ids (prompt, then generated), how many of them have their keys and
values in the KV cache (``num_computed_tokens``) and the cache blocks that hold them. Prefill and
decode are the same thing here: computing the tokens from ``num_computed_tokens`` on; a sequence
samples a new token when a step computes its last known token.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from modelplane.serving.runtime.generative.types import SamplingParams, TokenLogprob

_ROOT_HASH = 0  # the "previous block" of a sequence's first block (hash(None) is not stable < 3.12)


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


def block_hash(parent: int, tokens: tuple[int, ...]) -> int:
    """The prefix-cache key of a full block: its tokens and, through ``parent``, everything before.

    Python's hash of a tuple of ints is the same in every process (no hash randomization for
    ints); a 64-bit collision between two different prefixes is possible in principle and ignored,
    as vLLM does with its default hash.
    """
    return hash((parent, tokens))


@dataclass(eq=False)
class Sequence:
    """A request being generated: compared by identity, hashed by identity (used as a dict key)."""

    request_id: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams
    token_ids: list[int] = field(default_factory=list)  # prompt then output
    status: SequenceStatus = SequenceStatus.WAITING
    num_computed_tokens: int = 0
    block_ids: list[int] = field(default_factory=list)
    num_hashed_blocks: int = 0  # leading blocks of block_ids registered in the prefix cache
    cached_prompt_tokens: int | None = None  # prefix-cache hit at first admission
    _block_hashes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_token_ids) :]

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)

    def block_hashes(self, block_size: int, num_blocks: int) -> list[int]:
        """The prefix-cache keys of the first ``num_blocks`` full blocks (memoized: tokens never change)."""
        hashes = self._block_hashes
        while len(hashes) < num_blocks:
            start = len(hashes) * block_size
            parent = hashes[-1] if hashes else _ROOT_HASH
            hashes.append(block_hash(parent, tuple(self.token_ids[start : start + block_size])))
        return hashes[:num_blocks]


@dataclass(frozen=True)
class ScheduledChunk:
    """This step computes ``num_tokens`` tokens of ``seq`` starting at position ``start``.

    ``samples``: the chunk ends at the sequence's last known token, so its logits pick the next
    one (fixed when scheduled; the sequence grows once the sample is appended).
    """

    seq: Sequence
    start: int
    num_tokens: int
    samples: bool


@dataclass(frozen=True)
class Sample:
    """The token the sampler picked for one sequence, with its logprobs when asked for."""

    token_id: int
    logprob: TokenLogprob | None = None
