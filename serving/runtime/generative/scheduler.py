"""Iteration-level (continuous) batching: which tokens of which sequences the next step computes.

Every step builds one batch within ``max_num_batched_tokens`` tokens and ``max_num_seqs``
sequences: first the running sequences (one decode token each, decodes before unfinished
prefills so that a long prompt never stalls the streams), then waiting sequences in arrival
order (prefill, chunked to the budget that is left, after reusing their longest cached prefix).
New sequences therefore join at every step.

When a running sequence needs a block and none is free, the most recently started running
sequence is preempted: its blocks are freed, it goes back to the front of the waiting queue
and is recomputed later (its blocks often still sit in the prefix cache). A step that preempted
admits nobody. A waiting sequence whose first chunk does not fit simply waits.

Pure Python: no torch, so every decision is unit-tested on its own.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from modelplane.serving.runtime.generative.block_manager import BlockManager
from modelplane.serving.runtime.generative.sequence import ScheduledChunk, Sequence, SequenceStatus


@dataclass(frozen=True)
class SchedulerOutput:
    """One step's batch, decode-shaped chunks (one token) first, and who was preempted for it."""

    chunks: tuple[ScheduledChunk, ...]
    preempted: tuple[Sequence, ...] = ()

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks)


@dataclass
class SchedulerCounters:
    """Cumulative figures for :class:`~.types.EngineStats`."""

    preemptions: int = 0
    prefix_queries: int = 0  # tokens looked up in the prefix cache at admission
    prefix_hits: int = 0


class Scheduler:
    """Owns the waiting queue and the running list; the block manager owns the blocks."""

    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in the order they started: the last is preempted first
        self.counters = SchedulerCounters()

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def schedule(self) -> SchedulerOutput:
        budget = self.max_num_batched_tokens
        scheduled: dict[Sequence, ScheduledChunk] = {}
        preempted: list[Sequence] = []
        # Decodes first, each group in start order (a stable sort keeps it).
        order = sorted(self.running, key=lambda s: s.num_tokens - s.num_computed_tokens > 1)
        for seq in order:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted earlier in this loop
                continue
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            while not self.block_manager.allocate(seq, num_new):
                victim = self.running.pop()
                dropped = scheduled.pop(victim, None)
                if dropped is not None:
                    budget += dropped.num_tokens
                self._preempt(victim)
                preempted.append(victim)
                if victim is seq:
                    break
            else:
                scheduled[seq] = self._chunk(seq, num_new)
                budget -= num_new
        if not preempted:
            budget = self._admit(budget, scheduled)
        chunks = sorted(scheduled.values(), key=lambda c: c.num_tokens > 1)
        return SchedulerOutput(chunks=tuple(chunks), preempted=tuple(preempted))

    def _admit(self, budget: int, scheduled: dict[Sequence, ScheduledChunk]) -> int:
        manager = self.block_manager
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            cached = manager.find_cached_prefix(seq)
            num_cached = len(cached) * manager.block_size
            num_new = min(seq.num_tokens - num_cached, budget)
            if not manager.allocate(seq, num_new, cached):
                break  # wait for blocks; later arrivals wait behind it (no overtaking)
            self.waiting.popleft()
            if manager.enable_prefix_caching:
                self.counters.prefix_queries += seq.num_tokens
                self.counters.prefix_hits += num_cached
            if seq.cached_prompt_tokens is None:
                seq.cached_prompt_tokens = num_cached
            seq.num_computed_tokens = num_cached
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            scheduled[seq] = self._chunk(seq, num_new)
            budget -= num_new
        return budget

    @staticmethod
    def _chunk(seq: Sequence, num_new: int) -> ScheduledChunk:
        start = seq.num_computed_tokens
        return ScheduledChunk(seq, start, num_new, samples=start + num_new == seq.num_tokens)

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.counters.preemptions += 1

    def update(self, output: SchedulerOutput) -> None:
        """After the forward: the chunks' tokens are in the cache; full blocks become cacheable."""
        for chunk in output.chunks:
            chunk.seq.num_computed_tokens = chunk.start + chunk.num_tokens
            self.block_manager.cache_full_blocks(chunk.seq)

    def finish(self, seq: Sequence) -> None:
        """Take a finished or aborted sequence out, wherever it is, and free its blocks at once."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
