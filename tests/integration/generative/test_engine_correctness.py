"""The engine's greedy outputs equal transformers' ``generate`` on the same weights, whatever the batch.

A tiny random Llama (and its Mistral and Qwen2 cousins) with a tokenizer trained on the spot,
loaded by the engine in float32 on CPU. 32 prompts of mixed lengths go through the engine at once
(continuous batching, chunked prefill), then again with a KV cache so small that sequences are
preempted and recomputed. Batched arithmetic may flip a near-tie: a divergence is accepted only
where the reference's two best tokens are within ``NEAR_TIE`` of each other, and the sequences
are compared no further from there (vLLM's ``check_logprobs_close`` pattern).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from modelplane.serving.runtime.generative.config import EngineConfig
from modelplane.serving.runtime.generative.engine import LLMEngine
from modelplane.serving.runtime.generative.runner import kv_bytes_per_block
from modelplane.serving.runtime.generative.types import GenerationOutput, InvalidRequestError, SamplingParams
from modelplane.testing.generative import CORPUS, make_llama_dir, make_tokenizer_dir

NEAR_TIE = 1e-3  # logprob gap between the reference's top two tokens that batching may flip
BLOCK = 16


@dataclass(frozen=True)
class Reference:
    tokens: list[int]
    logprobs: torch.Tensor  # [steps, vocab], raw log-softmax of the reference's logits


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tokenizer_dir(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    return make_llama_dir(tmp_path_factory.mktemp("llama"), tokenizer_dir)


def load_reference(model_dir: Path) -> Any:
    import transformers

    model_class: Any = transformers.AutoModelForCausalLM
    model = model_class.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    # Like ignore_eos: no EOS stops it (min_new_tokens would instead mask EOS out of the argmax).
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def reference(model: Any, prompt: list[int], max_tokens: int) -> Reference:
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=max_tokens,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    logits = torch.stack(out.logits).squeeze(1).float()
    return Reference(out.sequences[0, len(prompt) :].tolist(), logits.log_softmax(dim=-1))


def assert_close(got: Sequence[int], ref: Reference, label: str) -> bool:
    """True when identical; a divergence must be at a near-tie of the reference. Compared up to it."""
    for step, (mine, theirs) in enumerate(zip(got, ref.tokens, strict=False)):
        if mine != theirs:
            top = ref.logprobs[step].topk(2).values
            gap = float(top[0] - top[1])
            assert gap < NEAR_TIE, (
                f"{label}: token {step} is {mine}, reference {theirs} (top-2 gap {gap:.2e})"
            )
            return False
    assert len(got) == len(ref.tokens), f"{label}: {len(got)} tokens, reference {len(ref.tokens)}"
    return True


def prompts_of_mixed_lengths(encode: Any, count: int = 32) -> list[list[int]]:
    text = " ".join(CORPUS.split())
    found = []
    for i in range(count):
        start = (i * 37) % (len(text) // 2)
        length = 1 + (i * 53) % 300  # 1 to 300 characters: 1 to about 120 tokens
        found.append(encode(text[start : start + length]))
    return found


def max_tokens_for(i: int) -> int:
    return 6 + (i * 7) % 19  # 6 to 24: sequences finish at different steps


async def start(config: EngineConfig) -> LLMEngine:
    engine = LLMEngine(config)
    engine.start()
    await asyncio.to_thread(engine.wait_ready, 120)
    return engine


async def collect(stream: AsyncIterator[GenerationOutput]) -> list[GenerationOutput]:
    return [output async for output in stream]


def tokens_of(outputs: list[GenerationOutput]) -> list[int]:
    return [t for o in outputs for t in o.token_ids]


@pytest.fixture(scope="module")
def corpus_case(model_dir: Path) -> tuple[list[list[int]], list[Reference]]:
    from modelplane.serving.runtime.generative.tokenizer import HFTokenizer

    prompts = prompts_of_mixed_lengths(HFTokenizer(model_dir).encode)
    model = load_reference(model_dir)
    return prompts, [reference(model, p, max_tokens_for(i)) for i, p in enumerate(prompts)]


def config_for(model_dir: Path, **overrides: Any) -> EngineConfig:
    settings: dict[str, Any] = {
        "model_dir": str(model_dir),
        "dtype": "float32",
        "device": "cpu",
        "block_size": BLOCK,
        "max_num_seqs": 12,
        "max_num_batched_tokens": 64,  # long prompts are prefilled in chunks
        "kv_cache_bytes": 8 * 1024 * 1024,
        **overrides,
    }
    return EngineConfig(**settings)


async def run_all(engine: LLMEngine, prompts: list[list[int]]) -> list[list[GenerationOutput]]:
    params = [
        SamplingParams(max_tokens=max_tokens_for(i), temperature=0.0, ignore_eos=True)
        for i in range(len(prompts))
    ]
    return await asyncio.gather(
        *(collect(engine.generate(f"r{i}", p, params[i])) for i, p in enumerate(prompts))
    )


def check_all(results: list[list[GenerationOutput]], refs: list[Reference], label: str) -> None:
    identical = sum(
        assert_close(tokens_of(out), ref, f"{label} prompt {i}")
        for i, (out, ref) in enumerate(zip(results, refs, strict=True))
    )
    print(f"{label}: {identical}/{len(refs)} identical, the rest diverged at a near-tie")
    for out in results:
        assert out[-1].finished
        assert out[-1].finish_reason == "length"


async def test_32_concurrent_prompts_match_transformers_greedy(
    model_dir: Path, corpus_case: tuple[list[list[int]], list[Reference]]
) -> None:
    prompts, refs = corpus_case
    engine = await start(config_for(model_dir))
    try:
        results = await run_all(engine, prompts)
        stats = engine.stats()
    finally:
        engine.stop()
    check_all(results, refs, "batched")
    assert stats.preemptions == 0
    assert stats.generation_tokens == sum(len(r.tokens) for r in refs)


async def test_preemption_and_recompute_do_not_change_the_outputs(
    model_dir: Path, corpus_case: tuple[list[list[int]], list[Reference]]
) -> None:
    prompts, refs = corpus_case
    from modelplane.serving.runtime.generative.loader import read_model_config

    longest = max(len(p) + max_tokens_for(i) for i, p in enumerate(prompts))
    blocks = -(-longest // BLOCK) + 2  # the longest request fits alone, and little more
    per_block = kv_bytes_per_block(read_model_config(model_dir).args, BLOCK, torch.float32)
    engine = await start(config_for(model_dir, kv_cache_bytes=blocks * per_block))
    try:
        results = await run_all(engine, prompts)
        stats = engine.stats()
    finally:
        engine.stop()
    assert stats.kv_blocks_total == blocks
    assert stats.preemptions > 0
    print(
        f"{stats.preemptions} preemptions; {stats.prefix_hits}/{stats.prefix_queries} tokens from the cache"
    )
    check_all(results, refs, "preempted")


async def test_a_shared_prefix_is_served_from_the_cache_with_the_same_output(model_dir: Path) -> None:
    from modelplane.serving.runtime.generative.tokenizer import HFTokenizer

    tokenizer = HFTokenizer(model_dir)
    prefix = tokenizer.encode(" ".join(CORPUS.split())[:400])
    first, second = prefix + tokenizer.encode(" first")[1:], prefix + tokenizer.encode(" second one")[1:]
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    engine = await start(config_for(model_dir))
    try:
        await collect(engine.generate("first", first, params))
        warm = await collect(engine.generate("second", second, params))
        stats = engine.stats()
    finally:
        engine.stop()
    assert stats.prefix_hits >= (len(prefix) // BLOCK) * BLOCK > 0
    assert warm[0].cached_prompt_tokens == stats.prefix_hits
    ref = reference(load_reference(model_dir), second, 12)
    assert_close(tokens_of(warm), ref, "prefix-cached")
    cold_engine = await start(config_for(model_dir, enable_prefix_caching=False))
    try:
        cold = await collect(cold_engine.generate("second", second, params))
    finally:
        cold_engine.stop()
    assert cold[0].cached_prompt_tokens == 0
    assert tokens_of(warm) == tokens_of(cold)


async def test_logprobs_are_the_reference_raw_logprobs(model_dir: Path) -> None:
    from modelplane.serving.runtime.generative.tokenizer import HFTokenizer

    prompt = HFTokenizer(model_dir).encode("The engine batches every running sequence")
    ref = reference(load_reference(model_dir), prompt, 5)
    engine = await start(config_for(model_dir))
    try:
        params = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True, logprobs=3)
        outputs = await collect(engine.generate("lp", prompt, params))
    finally:
        engine.stop()
    for step, output in enumerate(outputs):
        (logprob,) = output.logprobs
        assert logprob.token_id == ref.tokens[step]
        assert logprob.logprob == pytest.approx(float(ref.logprobs[step, ref.tokens[step]]), abs=1e-4)
        assert [t for t, _ in logprob.top] == ref.logprobs[step].topk(3).indices.tolist()


async def test_seeded_sampling_is_reproducible_across_runs_and_batch_mates(model_dir: Path) -> None:
    from modelplane.serving.runtime.generative.tokenizer import HFTokenizer

    tokenizer = HFTokenizer(model_dir)
    prompt = tokenizer.encode("Keys and values live in a paged cache")
    params = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.95, seed=1234, ignore_eos=True)
    engine = await start(config_for(model_dir))
    try:
        alone = tokens_of(await collect(engine.generate("alone", prompt, params)))
        again = tokens_of(await collect(engine.generate("again", prompt, params)))
        mates = [
            engine.generate(
                f"mate{i}",
                tokenizer.encode(f"batch mate {i} says"),
                SamplingParams(max_tokens=20, temperature=1.0, seed=i if i % 2 else None),
            )
            for i in range(6)
        ]
        together = await asyncio.gather(
            collect(engine.generate("together", prompt, params)), *(collect(m) for m in mates)
        )
        other_seed = tokens_of(
            await collect(
                engine.generate(
                    "other",
                    prompt,
                    SamplingParams(max_tokens=20, temperature=1.0, top_p=0.95, seed=99, ignore_eos=True),
                )
            )
        )
    finally:
        engine.stop()
    assert again == alone
    assert tokens_of(together[0]) == alone
    assert other_seed != alone


async def test_a_prompt_too_long_is_refused_naming_both_lengths(model_dir: Path) -> None:
    engine = await start(config_for(model_dir, max_model_len=100))
    try:
        with pytest.raises(InvalidRequestError, match=r"95 tokens.*context length of 100"):
            await collect(engine.generate("long", [5] * 95, SamplingParams(max_tokens=10)))
        assert engine.stats().waiting == 0
    finally:
        engine.stop()


@pytest.mark.parametrize(
    ("architecture", "extra"),
    [
        pytest.param("llama", {"tie_word_embeddings": True, "num_key_value_heads": 1}, id="llama-tied-mqa"),
        pytest.param("mistral", {"sliding_window": None}, id="mistral"),
        pytest.param("qwen2", {}, id="qwen2-biases"),
    ],
)
async def test_layout_compatible_architectures_match_transformers(
    tmp_path: Path, tokenizer_dir: Path, architecture: str, extra: dict[str, Any]
) -> None:
    model_dir = make_llama_dir(
        tmp_path / architecture, tokenizer_dir, architecture=architecture, seed=3, **extra
    )
    from modelplane.serving.runtime.generative.tokenizer import HFTokenizer

    prompts = prompts_of_mixed_lengths(HFTokenizer(model_dir).encode, count=6)
    model = load_reference(model_dir)
    refs = [reference(model, p, max_tokens_for(i)) for i, p in enumerate(prompts)]
    engine = await start(config_for(model_dir))
    try:
        results = await run_all(engine, prompts)
    finally:
        engine.stop()
    check_all(results, refs, architecture)
