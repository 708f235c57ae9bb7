"""Continuous batching decisions: budgets, joins, preemption and recompute, waiting for blocks."""

from __future__ import annotations

from modelplane.serving.runtime.generative.block_manager import BlockManager
from modelplane.serving.runtime.generative.scheduler import Scheduler, SchedulerOutput
from modelplane.serving.runtime.generative.sequence import Sequence, SequenceStatus
from modelplane.serving.runtime.generative.types import SamplingParams

BS = 4


def make(
    num_blocks: int = 64, max_num_seqs: int = 8, max_tokens: int = 64, caching: bool = True
) -> Scheduler:
    return Scheduler(BlockManager(num_blocks, BS, caching), max_num_seqs, max_tokens)


def seq(request_id: str, length: int, first: int = 0) -> Sequence:
    return Sequence(request_id, tuple(range(first, first + length)), SamplingParams())


def step(scheduler: Scheduler, token: int = 7) -> SchedulerOutput:
    """One engine step without a model: every chunk that ends its sequence samples ``token``."""
    out = scheduler.schedule()
    scheduler.update(out)
    for chunk in out.chunks:
        if chunk.samples:
            chunk.seq.append_token(token)
    return out


def planned(out: SchedulerOutput) -> list[tuple[str, int, int]]:
    return [(c.seq.request_id, c.start, c.num_tokens) for c in out.chunks]


def test_a_long_prompt_is_prefilled_in_chunks_of_the_token_budget() -> None:
    scheduler = make(max_tokens=10)
    scheduler.add(seq("a", 25))
    assert planned(step(scheduler)) == [("a", 0, 10)]
    assert planned(step(scheduler)) == [("a", 10, 10)]
    out = step(scheduler)
    assert planned(out) == [("a", 20, 5)]
    assert out.chunks[0].samples
    assert planned(step(scheduler)) == [("a", 25, 1)]  # decode


def test_chunks_that_do_not_end_the_prompt_do_not_sample() -> None:
    scheduler = make(max_tokens=10)
    scheduler.add(seq("a", 25))
    out = scheduler.schedule()
    assert not out.chunks[0].samples


def test_max_num_seqs_bounds_the_running_set() -> None:
    scheduler = make(max_num_seqs=2)
    for name in "abc":
        scheduler.add(seq(name, 3, first=ord(name) * 10))
    out = step(scheduler)
    assert [c.seq.request_id for c in out.chunks] == ["a", "b"]
    assert [s.request_id for s in scheduler.waiting] == ["c"]
    scheduler.finish(scheduler.running[0])
    assert [c.seq.request_id for c in step(scheduler).chunks] == ["b", "c"]


def test_new_sequences_join_at_every_step_after_the_decodes() -> None:
    scheduler = make()
    scheduler.add(seq("a", 5))
    step(scheduler)
    scheduler.add(seq("b", 6, first=100))
    assert planned(step(scheduler)) == [("a", 5, 1), ("b", 0, 6)]
    scheduler.add(seq("c", 2, first=200))
    assert planned(step(scheduler)) == [("a", 6, 1), ("b", 6, 1), ("c", 0, 2)]


def test_the_budget_is_shared_decodes_first() -> None:
    scheduler = make(max_tokens=8)
    scheduler.add(seq("a", 3))
    scheduler.add(seq("b", 3, first=50))
    step(scheduler)
    scheduler.add(seq("c", 20, first=100))
    out = step(scheduler)
    assert planned(out) == [("a", 3, 1), ("b", 3, 1), ("c", 0, 6)]
    assert out.num_tokens == 8
    # c's next chunk comes after the decodes again.
    assert planned(step(scheduler)) == [("a", 4, 1), ("b", 4, 1), ("c", 6, 6)]


def test_the_most_recently_started_sequence_is_preempted_and_recomputed() -> None:
    scheduler = make(num_blocks=4)  # 16 tokens
    scheduler.add(seq("a", 4))  # one block each, full
    scheduler.add(seq("b", 4, first=100))
    scheduler.add(seq("c", 4, first=200))
    step(scheduler)
    assert scheduler.block_manager.num_free_blocks == 1
    # Each decode now needs a new block; a gets the free one, b needs one: c (newest) goes.
    out = step(scheduler)
    assert [s.request_id for s in out.preempted] == ["c"]
    assert planned(out) == [("a", 4, 1), ("b", 4, 1)]
    c = scheduler.waiting[0]
    assert c.request_id == "c"
    assert c.status is SequenceStatus.WAITING
    assert c.num_computed_tokens == 0
    assert c.block_ids == []
    assert c.num_tokens == 5
    assert scheduler.counters.preemptions == 1
    scheduler.finish(scheduler.running[0])
    out = step(scheduler)
    # c comes back and recomputes its prompt and its token (b took c's block: no cache hit).
    assert planned(out) == [("b", 5, 1), ("c", 0, 5)]
    assert out.chunks[1].samples


def test_a_preempted_sequence_goes_in_front_of_earlier_arrivals() -> None:
    scheduler = make(num_blocks=2)
    scheduler.add(seq("a", 4))
    scheduler.add(seq("b", 4, first=100))
    step(scheduler)
    scheduler.add(seq("late", 2, first=300))
    out = step(scheduler)
    assert [s.request_id for s in out.preempted] == ["b"]
    assert [s.request_id for s in scheduler.waiting] == ["b", "late"]
    assert "late" not in [c.seq.request_id for c in out.chunks]  # no admission in a preempting step


def test_a_lone_sequence_that_needs_a_block_preempts_itself_only_when_alone_it_cannot_fit() -> None:
    scheduler = make(num_blocks=1)
    scheduler.add(seq("a", 4))
    step(scheduler)
    out = step(scheduler)  # position 4 needs a second block that does not exist
    assert [s.request_id for s in out.preempted] == ["a"]
    assert out.chunks == ()


def test_a_waiting_sequence_waits_while_the_cache_is_full() -> None:
    scheduler = make(num_blocks=2)
    scheduler.add(seq("a", 6))
    step(scheduler)
    scheduler.add(seq("b", 8, first=100))
    out = step(scheduler)
    assert planned(out) == [("a", 6, 1)]
    assert out.preempted == ()
    assert [s.request_id for s in scheduler.waiting] == ["b"]
    scheduler.finish(scheduler.running[0])
    assert planned(step(scheduler)) == [("b", 0, 8)]


def test_prefix_hits_skip_the_cached_blocks_and_are_counted() -> None:
    scheduler = make()
    scheduler.add(seq("a", 10))
    step(scheduler)
    b = Sequence("b", (*range(8), 90, 91), SamplingParams())
    scheduler.add(b)
    out = step(scheduler)
    assert ("b", 8, 2) in planned(out)
    assert b.cached_prompt_tokens == 8
    assert scheduler.counters.prefix_queries == 20
    assert scheduler.counters.prefix_hits == 8


def test_finish_removes_a_sequence_wherever_it_is_and_frees_its_blocks() -> None:
    scheduler = make(max_num_seqs=1)
    scheduler.add(seq("a", 5))
    scheduler.add(seq("b", 5, first=100))
    step(scheduler)
    a, b = scheduler.running[0], scheduler.waiting[0]
    scheduler.finish(b)
    scheduler.finish(a)
    assert not scheduler.has_work
    assert scheduler.block_manager.num_used_blocks == 0
    assert a.status is SequenceStatus.FINISHED
    assert b.status is SequenceStatus.FINISHED


def test_a_recomputed_sequence_reuses_its_blocks_still_in_the_prefix_cache() -> None:
    scheduler = make(num_blocks=3)
    scheduler.add(seq("a", 4))
    scheduler.add(seq("b", 4, first=100))
    step(scheduler)
    out = step(scheduler)  # a takes the last block; b, the newest, preempts itself
    assert [s.request_id for s in out.preempted] == ["b"]
    assert planned(out) == [("a", 4, 1)]
    scheduler.finish(scheduler.running[0])
    out = step(scheduler)
    assert planned(out) == [("b", 4, 1)]  # its full first block came back from the cache
    assert out.chunks[0].seq.cached_prompt_tokens == 0  # what its first admission found
