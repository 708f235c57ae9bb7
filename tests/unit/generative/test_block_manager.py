"""The paged KV cache's bookkeeping: allocation, growth, freeing, sharing, eviction."""

from __future__ import annotations

import pytest

from modelplane.serving.runtime.generative.block_manager import BlockManager
from modelplane.serving.runtime.generative.sequence import Sequence, block_hash
from modelplane.serving.runtime.generative.types import SamplingParams

BS = 4


def seq(tokens: list[int], request_id: str = "r") -> Sequence:
    return Sequence(request_id, tuple(tokens), SamplingParams())


def compute(manager: BlockManager, s: Sequence, n: int) -> None:
    """What a step does: allocate room for ``n`` tokens, compute them, register full blocks."""
    assert manager.allocate(s, n)
    s.num_computed_tokens += n
    manager.cache_full_blocks(s)


def test_allocation_covers_the_tokens_and_grows_one_block_at_a_time() -> None:
    manager = BlockManager(num_blocks=8, block_size=BS)
    s = seq(list(range(6)))
    assert manager.allocate(s, 6)
    assert len(s.block_ids) == 2
    assert manager.num_used_blocks == 2
    s.num_computed_tokens = 6
    assert manager.allocate(s, 1)  # position 6: still in block 2
    assert len(s.block_ids) == 2
    s.num_computed_tokens = 8
    assert manager.allocate(s, 1)  # position 8: a third block
    assert len(s.block_ids) == 3
    assert manager.num_free_blocks == 5
    assert len(set(s.block_ids)) == 3


def test_free_returns_every_block() -> None:
    manager = BlockManager(num_blocks=4, block_size=BS)
    s = seq(list(range(10)))
    assert manager.allocate(s, 10)
    manager.free(s)
    assert s.block_ids == []
    assert manager.num_used_blocks == 0
    assert manager.num_free_blocks == 4


def test_out_of_blocks_changes_nothing() -> None:
    manager = BlockManager(num_blocks=3, block_size=BS)
    a, b = seq(list(range(8)), "a"), seq(list(range(100, 108)), "b")
    assert manager.allocate(a, 8)
    assert not manager.allocate(b, 8)
    assert b.block_ids == []
    assert manager.num_free_blocks == 1
    assert manager.allocate(b, 4)  # a smaller chunk fits


def test_a_shared_prefix_is_reused_with_reference_counts() -> None:
    manager = BlockManager(num_blocks=8, block_size=BS)
    prompt = list(range(10))  # two full blocks and a partial one
    a = seq(prompt, "a")
    compute(manager, a, 10)
    b = seq([*prompt[:8], 50, 51, 52], "b")
    hits = manager.find_cached_prefix(b)
    assert hits == a.block_ids[:2]
    assert manager.allocate(b, b.num_tokens - 8, hits)
    assert b.block_ids[:2] == a.block_ids[:2]
    assert b.block_ids[2] != a.block_ids[2]
    assert [manager.ref_count(x) for x in a.block_ids[:2]] == [2, 2]
    manager.free(a)
    assert [manager.ref_count(x) for x in b.block_ids[:2]] == [1, 1]
    assert manager.num_used_blocks == 3  # b's blocks only


def test_the_last_token_is_never_served_from_the_cache() -> None:
    manager = BlockManager(num_blocks=8, block_size=BS)
    a = seq(list(range(8)), "a")
    compute(manager, a, 8)
    same = seq(list(range(8)), "b")
    assert manager.find_cached_prefix(same) == a.block_ids[:1]  # 7 tokens may hit: one block
    longer = seq(list(range(9)), "c")
    assert manager.find_cached_prefix(longer) == a.block_ids[:2]


def test_a_freed_block_stays_cached_until_the_pool_needs_it() -> None:
    manager = BlockManager(num_blocks=4, block_size=BS)
    a = seq(list(range(9)), "a")
    compute(manager, a, 9)
    a_blocks = list(a.block_ids)
    manager.free(a)
    assert manager.num_used_blocks == 0
    assert manager.num_cached_blocks == 2
    b = seq([*range(8), 99], "b")
    hits = manager.find_cached_prefix(b)
    assert hits == a_blocks[:2]
    assert manager.allocate(b, 1, hits)
    assert manager.num_used_blocks == 3  # two revived from the free queue, one new


def test_eviction_takes_unhashed_blocks_first_then_the_least_recently_freed() -> None:
    manager = BlockManager(num_blocks=4, block_size=BS)
    old = seq(list(range(6)), "old")  # one full block (hashed) and a partial one (not)
    compute(manager, old, 6)
    manager.free(old)
    new = seq(list(range(10, 14)), "new")
    compute(manager, new, 4)
    manager.free(new)
    assert manager.num_cached_blocks == 2
    # Two blocks hold nothing reusable (old's partial one, one never used): they go first.
    taker = seq(list(range(100, 108)), "t")
    assert manager.allocate(taker, 8)
    assert manager.num_cached_blocks == 2
    # The next block evicts the least recently freed cached block: "old".
    assert manager.allocate(taker, 12)
    assert manager.find_cached_prefix(seq([*range(4), 0], "x")) == []
    assert len(manager.find_cached_prefix(seq([*range(10, 14), 0], "y"))) == 1


def test_a_hit_on_a_free_block_counts_against_the_free_pool() -> None:
    manager = BlockManager(num_blocks=2, block_size=BS)
    a = seq(list(range(5)), "a")
    compute(manager, a, 5)
    manager.free(a)
    b = seq([*range(4), 7, 8, 9, 10, 11], "b")  # hits one block, needs two more: only one left
    hits = manager.find_cached_prefix(b)
    assert len(hits) == 1
    assert not manager.allocate(b, 5, hits)
    assert manager.ref_count(hits[0]) == 0
    assert b.block_ids == []


def test_block_hashes_chain_through_the_prefix() -> None:
    a = seq([1, 2, 3, 4, 5, 6, 7, 8])
    b = seq([9, 9, 9, 9, 5, 6, 7, 8])
    ha, hb = a.block_hashes(BS, 2), b.block_hashes(BS, 2)
    assert ha[0] == block_hash(0, (1, 2, 3, 4))
    assert ha[1] != hb[1]  # same tokens, different prefix


def test_prefix_caching_off_finds_nothing() -> None:
    manager = BlockManager(num_blocks=4, block_size=BS, enable_prefix_caching=False)
    a = seq(list(range(9)), "a")
    compute(manager, a, 9)
    assert manager.num_cached_blocks == 0
    assert manager.find_cached_prefix(seq(list(range(9)), "b")) == []


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one block"):
        BlockManager(num_blocks=0, block_size=BS)
