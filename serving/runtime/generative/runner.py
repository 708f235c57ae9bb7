"""The tensor side of a step: the scheduled chunks in, one sampled token per finished chunk out.

Owns the model and the KV cache (one key and one value tensor per layer, ``[blocks * block_size,
kv_heads, head_dim]``, so a token's slot is ``block_id * block_size + offset``), turns the
scheduler's chunks into one flat batch (token ids, positions, slots, attention metadata), runs
the forward, computes logits only for the rows that sample and calls the sampler. Runs on the
engine's thread only.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from modelplane.serving.runtime.generative.attention import AttentionMetadata, PrefillSegment
from modelplane.serving.runtime.generative.block_manager import blocks_for
from modelplane.serving.runtime.generative.llama import LlamaArgs, LlamaForCausalLM
from modelplane.serving.runtime.generative.sampling import sample
from modelplane.serving.runtime.generative.sequence import Sample, ScheduledChunk, Sequence


def kv_bytes_per_block(args: LlamaArgs, block_size: int, dtype: torch.dtype) -> int:
    """Keys and values of ``block_size`` tokens in every layer."""
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * args.num_layers * block_size * args.num_kv_heads * args.head_dim * element


@dataclass(frozen=True)
class StepInputs:
    input_ids: torch.Tensor
    positions: torch.Tensor
    meta: AttentionMetadata
    sample_rows: torch.Tensor
    sampling: tuple[ScheduledChunk, ...]  # the chunks that sample, in the order of sample_rows


class ModelRunner:
    """Runs the scheduled chunks through the model on its device."""

    def __init__(
        self,
        model: LlamaForCausalLM,
        num_blocks: int,
        block_size: int,
        device: torch.device,
        dtype: torch.dtype,
        seed: int | None = None,
    ) -> None:
        args = model.args
        self.model = model
        self.device = device
        self.block_size = block_size
        self.num_blocks = num_blocks
        shape = (num_blocks * block_size, args.num_kv_heads, args.head_dim)
        # Zeros, not empty: masked-out padding still multiplies the values it gathers (0 * NaN).
        self.caches = [
            (torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(args.num_layers)
        ]
        self._shared = torch.Generator(device=device)
        if seed is None:
            self._shared.seed()
        else:
            self._shared.manual_seed(seed)
        self._generators: dict[str, torch.Generator] = {}

    def execute(self, chunks: Seq[ScheduledChunk]) -> list[Sample]:
        """One sample per chunk that samples, in the order of ``chunks``."""
        if not chunks:
            return []
        with torch.inference_mode():
            inputs = self.prepare(chunks)
            hidden = self.model(inputs.input_ids, inputs.positions, self.caches, inputs.meta)
            if not inputs.sampling:
                return []
            logits = self.model.logits(hidden[inputs.sample_rows])
            seqs = [c.seq for c in inputs.sampling]
            found = sample(logits, [s.params for s in seqs], [self._generator(s) for s in seqs], self._shared)
        by_seq = {id(s): f for s, f in zip(seqs, found, strict=True)}
        return [by_seq[id(c.seq)] for c in chunks if c.samples]

    def release(self, request_id: str) -> None:
        """Forget a finished request's generator."""
        self._generators.pop(request_id, None)

    def _generator(self, seq: Sequence) -> torch.Generator | None:
        if seq.params.seed is None:
            return None
        generator = self._generators.get(seq.request_id)
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(seq.params.seed)
            self._generators[seq.request_id] = generator
        return generator

    def prepare(self, chunks: Seq[ScheduledChunk]) -> StepInputs:
        """The flat batch: decode-shaped chunks first (one padded attention call), then prefills."""
        bs = self.block_size
        ordered = sorted(chunks, key=lambda c: c.num_tokens > 1)
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        decode_tables: list[list[int]] = []
        decode_lens: list[int] = []
        prefills: list[PrefillSegment] = []
        sample_rows: list[int] = []
        for chunk in ordered:
            seq, start, n = chunk.seq, chunk.start, chunk.num_tokens
            table = seq.block_ids
            begin = len(ids)
            ids.extend(seq.token_ids[start : start + n])
            positions.extend(range(start, start + n))
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, start + n))
            if n == 1:
                decode_tables.append(table)
                decode_lens.append(start + 1)
            else:
                prefills.append(self._prefill_segment(begin, start, n, table))
            if chunk.samples:
                sample_rows.append(len(ids) - 1)
        decode_blocks, decode_mask = self._decode_metadata(decode_tables, decode_lens)
        meta = AttentionMetadata(
            slot_mapping=self._tensor(slots),
            block_size=bs,
            num_decodes=len(decode_lens),
            decode_blocks=decode_blocks,
            decode_mask=decode_mask,
            prefills=tuple(prefills),
        )
        return StepInputs(
            input_ids=self._tensor(ids),
            positions=self._tensor(positions),
            meta=meta,
            sample_rows=self._tensor(sample_rows),
            sampling=tuple(c for c in ordered if c.samples),
        )

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long).to(self.device, non_blocking=True)

    def _prefill_segment(self, begin: int, start: int, n: int, table: list[int]) -> PrefillSegment:
        if start == 0:
            return PrefillSegment(begin, begin + n)
        context = start + n
        blocks = table[: blocks_for(context, self.block_size)]
        keys = torch.arange(len(blocks) * self.block_size).unsqueeze(0)
        mask = keys <= torch.arange(start, context).unsqueeze(1)  # causal; the padding is beyond all
        return PrefillSegment(begin, begin + n, self._tensor(blocks), mask.to(self.device, non_blocking=True))

    def _decode_metadata(
        self, tables: list[list[int]], lens: list[int]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Each decode row's block table, padded to the longest, and the mask of the padding."""
        if not lens:
            return None, None
        width = blocks_for(max(lens), self.block_size)
        padded = [t[:width] + [0] * (width - len(t[:width])) for t in tables]
        keys = torch.arange(width * self.block_size).unsqueeze(0)
        mask = (keys < torch.tensor(lens).unsqueeze(1)).view(len(lens), 1, 1, -1)
        return self._tensor_2d(padded), mask.to(self.device, non_blocking=True)

    def _tensor_2d(self, values: list[list[int]]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long).to(self.device, non_blocking=True)
