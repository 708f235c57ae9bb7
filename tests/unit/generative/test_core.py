"""The synchronous engine step over a fake runner: admission checks, outputs, aborts, stats."""

from __future__ import annotations

from collections.abc import Sequence as Seq

import pytest

from modelplane.serving.runtime.generative.block_manager import BlockManager
from modelplane.serving.runtime.generative.core import EngineCore
from modelplane.serving.runtime.generative.scheduler import Scheduler
from modelplane.serving.runtime.generative.sequence import Sample, ScheduledChunk
from modelplane.serving.runtime.generative.types import GenerationOutput, InvalidRequestError, SamplingParams
from modelplane.testing.generative import ByteTokenizer


class CountingRunner:
    """Samples the byte after the last token (a, b, c, ...): no model needed."""

    def __init__(self) -> None:
        self.released: list[str] = []
        self.batches: list[list[tuple[str, int, int]]] = []

    def execute(self, chunks: Seq[ScheduledChunk]) -> list[Sample]:
        self.batches.append([(c.seq.request_id, c.start, c.num_tokens) for c in chunks])
        return [Sample((c.seq.token_ids[-1] + 1) % 256) for c in chunks if c.samples]

    def release(self, request_id: str) -> None:
        self.released.append(request_id)


def make(num_blocks: int = 16, max_model_len: int = 64) -> tuple[EngineCore, CountingRunner]:
    runner = CountingRunner()
    scheduler = Scheduler(BlockManager(num_blocks, 4), max_num_seqs=4, max_num_batched_tokens=16)
    core = EngineCore(runner, scheduler, ByteTokenizer(), {ByteTokenizer.EOS}, max_model_len, vocab_size=257)
    return core, runner


def drain(core: EngineCore) -> dict[str, list[GenerationOutput]]:
    found: dict[str, list[GenerationOutput]] = {}
    while core.has_work:
        outputs, _info = core.step()
        for output in outputs:
            found.setdefault(output.request_id, []).append(output)
    return found


def test_requests_run_to_their_length_with_text_and_stats() -> None:
    core, runner = make()
    core.add_request("x", [ord("a")], SamplingParams(max_tokens=3))
    core.add_request("y", [ord("k"), ord("l")], SamplingParams(max_tokens=2))
    found = drain(core)
    assert "".join(o.text for o in found["x"]) == "bcd"
    assert "".join(o.text for o in found["y"]) == "mn"
    assert found["x"][-1].finish_reason == "length"
    stats = core.stats()
    assert stats.generation_tokens == 5
    assert stats.prompt_tokens == 3
    assert stats.kv_blocks_used == 0
    assert stats.running == 0
    assert sorted(runner.released) == ["x", "y"]


def test_abort_frees_the_blocks_at_once() -> None:
    core, runner = make()
    core.add_request("x", list(range(97, 107)), SamplingParams(max_tokens=20))
    core.step()
    assert core.stats().kv_blocks_used == 3
    aborted = core.abort_request("x")
    assert aborted is not None
    assert aborted.finish_reason == "abort"
    assert aborted.finished
    assert core.stats().kv_blocks_used == 0
    assert not core.has_work
    assert core.abort_request("x") is None
    assert runner.released == ["x"]


def test_step_info_splits_prefill_and_decode_tokens() -> None:
    core, _runner = make()
    core.add_request("x", [97, 98, 99], SamplingParams(max_tokens=5))
    _outputs, first = core.step()
    _outputs, second = core.step()
    assert first is not None
    assert (first.num_prefill_tokens, first.num_decode_tokens) == (3, 0)
    assert second is not None
    assert (second.num_prefill_tokens, second.num_decode_tokens) == (0, 1)


def test_an_empty_prompt_is_refused() -> None:
    core, _runner = make()
    with pytest.raises(InvalidRequestError, match="empty"):
        core.check_request([], SamplingParams())


def test_a_token_outside_the_vocabulary_is_refused() -> None:
    core, _runner = make()
    with pytest.raises(InvalidRequestError, match="300"):
        core.check_request([1, 300], SamplingParams())


def test_a_prompt_beyond_the_context_names_both_lengths() -> None:
    core, _runner = make(max_model_len=64)
    with pytest.raises(InvalidRequestError, match=r"60 tokens.*max_tokens is 10.*context length of 64"):
        core.check_request([1] * 60, SamplingParams(max_tokens=10))


def test_a_request_larger_than_the_whole_cache_is_refused() -> None:
    core, _runner = make(num_blocks=4, max_model_len=64)  # 16 tokens of cache
    with pytest.raises(InvalidRequestError, match=r"KV cache holds \(16 tokens\)"):
        core.check_request([1] * 10, SamplingParams(max_tokens=10))
    core.check_request([1] * 10, SamplingParams(max_tokens=6))


def test_parameters_are_checked_at_admission() -> None:
    core, _runner = make()
    with pytest.raises(InvalidRequestError, match="top_p"):
        core.check_request([1], SamplingParams(top_p=0))
