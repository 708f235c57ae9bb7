"""The paged KV cache's bookkeeping: which blocks each sequence holds, and the prefix cache.

Pure Python: the model runner owns the tensors; this class only hands out block numbers. A block
is *used* while a live sequence references it (``ref_count > 0``), *free* otherwise. Free blocks
sit in one LRU queue; a free block that still holds a full, hashed block of tokens stays findable
in the prefix cache until the pool needs it back, when the least recently freed one is evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence as Seq

from modelplane.serving.runtime.generative.sequence import Sequence


def blocks_for(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


class BlockManager:
    """Allocates fixed-size KV-cache blocks to sequences, with reference-counted prefix sharing."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of one token, got {num_blocks} x {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._ref_counts = [0] * num_blocks
        self._hashes: list[int | None] = [None] * num_blocks
        # Free blocks, least recently freed first: the next to reuse (and so to evict) is first.
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._cached: dict[int, int] = {}  # block hash -> block id

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        """Blocks referenced by live sequences (cached-but-free blocks are free)."""
        return self.num_blocks - len(self._free)

    @property
    def num_cached_blocks(self) -> int:
        return len(self._cached)

    def ref_count(self, block_id: int) -> int:
        return self._ref_counts[block_id]

    def find_cached_prefix(self, seq: Sequence) -> list[int]:
        """The cached blocks holding the longest prefix of ``seq``'s tokens (nothing is taken yet).

        The last token is never served from the cache, so a fully cached prompt still computes
        one token and has logits to sample from.
        """
        if not self.enable_prefix_caching:
            return []
        found: list[int] = []
        for h in seq.block_hashes(self.block_size, (seq.num_tokens - 1) // self.block_size):
            block_id = self._cached.get(h)
            if block_id is None:
                break
            found.append(block_id)
        return found

    def allocate(self, seq: Sequence, num_new_tokens: int, cached: Seq[int] = ()) -> bool:
        """Grow ``seq``'s blocks to hold ``num_new_tokens`` more tokens; False (nothing changed) if full.

        ``cached`` (from :meth:`find_cached_prefix`, only for a sequence that holds no blocks yet)
        are shared first: their reference counts go up and they leave the free queue.
        """
        if cached and seq.block_ids:
            raise ValueError("cached prefix blocks go only to a sequence that holds no blocks")
        computed = seq.num_computed_tokens + len(cached) * self.block_size
        needed = blocks_for(computed + num_new_tokens, self.block_size) - len(seq.block_ids) - len(cached)
        revived = sum(1 for b in cached if self._ref_counts[b] == 0)
        if needed > len(self._free) - revived:
            return False
        for block_id in cached:
            if self._ref_counts[block_id] == 0:
                del self._free[block_id]
            self._ref_counts[block_id] += 1
        seq.block_ids.extend(cached)
        if cached:
            seq.num_hashed_blocks = len(cached)
        for _ in range(max(needed, 0)):
            seq.block_ids.append(self._take_free_block())
        return True

    def _take_free_block(self) -> int:
        block_id, _ = self._free.popitem(last=False)
        old_hash = self._hashes[block_id]
        if old_hash is not None:  # evict it from the prefix cache
            if self._cached.get(old_hash) == block_id:
                del self._cached[old_hash]
            self._hashes[block_id] = None
        self._ref_counts[block_id] = 1
        return block_id

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register ``seq``'s blocks that became full of computed tokens in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        num_full = seq.num_computed_tokens // self.block_size
        if num_full <= seq.num_hashed_blocks:
            return
        hashes = seq.block_hashes(self.block_size, num_full)
        for index in range(seq.num_hashed_blocks, num_full):
            h, block_id = hashes[index], seq.block_ids[index]
            if h not in self._cached:  # a duplicate stays unhashed and is reused first once freed
                self._cached[h] = block_id
                self._hashes[block_id] = h
        seq.num_hashed_blocks = num_full

    def free(self, seq: Sequence) -> None:
        """Drop ``seq``'s references; blocks nobody uses become free (hashed ones stay cached).

        Freed in reverse so that a sequence's last blocks are evicted before its first ones (a
        prefix is worth more than a tail). Unhashed blocks hold nothing reusable: they go to the
        front of the queue, to be taken before any cached block.
        """
        for block_id in reversed(seq.block_ids):
            self._ref_counts[block_id] -= 1
            if self._ref_counts[block_id] == 0:
                self._free[block_id] = None
                if self._hashes[block_id] is None:
                    self._free.move_to_end(block_id, last=False)
        seq.block_ids = []
        seq.num_hashed_blocks = 0
