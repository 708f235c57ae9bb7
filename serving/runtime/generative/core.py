"""One engine step, synchronously: schedule, run the model, turn samples into output increments.

The core owns the scheduler and every request's output state; the tensor work is behind the
:class:`StepRunner` protocol (the real :class:`.runner.ModelRunner`, or a fake in unit tests),
so the core is plain Python. Only the engine's thread calls it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence as Seq
from collections.abc import Set
from dataclasses import dataclass
from typing import Protocol

from modelplane.serving.runtime.generative.output import RequestState
from modelplane.serving.runtime.generative.scheduler import Scheduler
from modelplane.serving.runtime.generative.sequence import Sample, ScheduledChunk, Sequence
from modelplane.serving.runtime.generative.types import (
    EngineStats,
    GenerationOutput,
    InvalidRequestError,
    SamplingParams,
    Tokenizer,
)


class StepRunner(Protocol):
    """The tensor side of a step."""

    def execute(self, chunks: Seq[ScheduledChunk]) -> list[Sample]:
        """One sample per chunk that samples, in the order of ``chunks``."""
        ...

    def release(self, request_id: str) -> None:
        """The request is gone: drop whatever the runner keeps for it (its generator)."""
        ...


@dataclass(frozen=True)
class StepInfo:
    """What one step did: handed to the engine's ``on_step`` hook (a metrics layer's counters).

    Time to first token and inter-token latency are best measured by the consumer of
    :meth:`~.types.Engine.generate` (it sees when each increment arrives); this is the
    engine's side: how long a step took and what it computed.
    """

    duration_s: float
    num_seqs: int
    num_prefill_tokens: int
    num_decode_tokens: int
    num_preempted: int
    num_finished: int


class EngineCore:
    """The synchronous engine: requests in, :class:`~.types.GenerationOutput` increments out."""

    def __init__(
        self,
        runner: StepRunner,
        scheduler: Scheduler,
        tokenizer: Tokenizer,
        eos_token_ids: Set[int],
        max_model_len: int,
        vocab_size: int,
    ) -> None:
        self.runner = runner
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset(eos_token_ids)
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        manager = scheduler.block_manager
        self.cache_tokens = manager.num_blocks * manager.block_size
        self._states: dict[str, RequestState] = {}
        self._prompt_tokens = 0
        self._generation_tokens = 0

    def check_request(self, prompt_token_ids: Seq[int], params: SamplingParams) -> None:
        """Raise :class:`InvalidRequestError` unless the request can run (it alone always fits).

        Reads only fixed settings, so any thread may call it.
        """
        params.check()
        n = len(prompt_token_ids)
        if n == 0:
            raise InvalidRequestError("the prompt is empty: at least one token is needed")
        bad = next((t for t in prompt_token_ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise InvalidRequestError(
                f"prompt token id {bad} is outside the vocabulary (0 to {self.vocab_size - 1})"
            )
        total = n + params.max_tokens
        if total > self.max_model_len:
            raise InvalidRequestError(
                f"the prompt has {n} tokens and max_tokens is {params.max_tokens}: {total} tokens is more "
                f"than the model's context length of {self.max_model_len} tokens"
            )
        if total > self.cache_tokens:
            raise InvalidRequestError(
                f"the prompt has {n} tokens and max_tokens is {params.max_tokens}: {total} tokens is more "
                f"than the KV cache holds ({self.cache_tokens} tokens)"
            )

    def add_request(self, request_id: str, prompt_token_ids: Seq[int], params: SamplingParams) -> None:
        seq = Sequence(request_id, tuple(prompt_token_ids), params)
        self._states[request_id] = RequestState(seq, self.tokenizer, self.eos_token_ids, self.max_model_len)
        self.scheduler.add(seq)

    def abort_request(self, request_id: str) -> GenerationOutput | None:
        """Take the request out and free its blocks now; None when it is not (or no longer) here."""
        state = self._states.pop(request_id, None)
        if state is None:
            return None
        self.scheduler.finish(state.seq)
        self.runner.release(request_id)
        return state.aborted()

    def abort_all(self) -> list[GenerationOutput]:
        return [out for rid in list(self._states) if (out := self.abort_request(rid)) is not None]

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    @property
    def request_ids(self) -> list[str]:
        return list(self._states)

    def step(self) -> tuple[list[GenerationOutput], StepInfo | None]:
        """Run one batch; the increments of every sequence that sampled a token."""
        started = time.perf_counter()
        scheduled = self.scheduler.schedule()
        if not scheduled.chunks:
            return [], None
        samples = self.runner.execute(scheduled.chunks)
        self.scheduler.update(scheduled)
        sampling = [c for c in scheduled.chunks if c.samples]
        outputs: list[GenerationOutput] = []
        for chunk, found in zip(sampling, samples, strict=True):
            state = self._states[chunk.seq.request_id]
            output = state.on_sample(found)
            outputs.append(output)
            if output.finished:
                del self._states[chunk.seq.request_id]
                self.scheduler.finish(chunk.seq)
                self.runner.release(chunk.seq.request_id)
        decode = sum(1 for c in scheduled.chunks if _is_decode(c))
        prefill = scheduled.num_tokens - decode
        self._prompt_tokens += prefill
        self._generation_tokens += len(samples)
        info = StepInfo(
            duration_s=time.perf_counter() - started,
            num_seqs=len(scheduled.chunks),
            num_prefill_tokens=prefill,
            num_decode_tokens=decode,
            num_preempted=len(scheduled.preempted),
            num_finished=sum(1 for o in outputs if o.finished),
        )
        return outputs, info

    def stats(self, extra_waiting: int = 0) -> EngineStats:
        scheduler, manager = self.scheduler, self.scheduler.block_manager
        counters = scheduler.counters
        return EngineStats(
            running=len(scheduler.running),
            waiting=len(scheduler.waiting) + extra_waiting,
            kv_blocks_total=manager.num_blocks,
            kv_blocks_used=manager.num_used_blocks,
            prefix_queries=counters.prefix_queries,
            prefix_hits=counters.prefix_hits,
            preemptions=counters.preemptions,
            prompt_tokens=self._prompt_tokens,
            generation_tokens=self._generation_tokens,
        )


def _is_decode(chunk: ScheduledChunk) -> bool:
    """The newest generated token's own step (not a prompt token, not a recomputed one)."""
    return chunk.num_tokens == 1 and chunk.samples and chunk.start >= chunk.seq.num_prompt_tokens
