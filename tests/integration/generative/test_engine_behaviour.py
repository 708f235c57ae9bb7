"""The asynchronous engine's contract: cancellation frees the cache, admission errors, stop, hooks.

A tiny random Llama on CPU, float32, through :class:`LLMEngine` and its background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from modelplane.serving.runtime.generative.config import EngineConfig
from modelplane.serving.runtime.generative.core import StepInfo
from modelplane.serving.runtime.generative.engine import LLMEngine
from modelplane.serving.runtime.generative.types import (
    Engine,
    EngineNotReadyError,
    GenerationOutput,
    InvalidRequestError,
    QueueFullError,
    SamplingParams,
)
from modelplane.testing.generative import make_tiny_llama_dir

LONG = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def config(model_dir: Path) -> EngineConfig:
    return EngineConfig(
        model_dir=str(model_dir),
        dtype="float32",
        device="cpu",
        max_num_seqs=64,
        max_num_batched_tokens=512,
        kv_cache_bytes=8 * 1024 * 1024,
    )


@contextlib.asynccontextmanager
async def running(config: EngineConfig, **kwargs: Any) -> AsyncIterator[LLMEngine]:
    engine = LLMEngine(config, **kwargs)
    engine.start()
    await asyncio.to_thread(engine.wait_ready, 120)
    try:
        yield engine
    finally:
        engine.stop()


async def first_of(stream: AsyncGenerator[GenerationOutput, None]) -> GenerationOutput:
    return await anext(stream)


def is_ready(engine: LLMEngine) -> bool:
    return engine.ready


async def poll(condition: Any, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_closing_50_streams_mid_generation_frees_every_block(config: EngineConfig) -> None:
    async with running(config) as engine:
        prompt = engine.tokenizer.encode("The quick brown fox jumps over the lazy dog")
        streams = [engine.generate(f"c{i}", [*prompt, i % 100 + 3], LONG) for i in range(50)]
        for stream in streams:  # every stream is generating
            await anext(stream)
        for stream in streams:
            await anext(stream)
        assert engine.stats().kv_blocks_used > 0
        for stream in streams:
            await stream.aclose()
        assert await poll(lambda: engine.stats().kv_blocks_used == 0, within_s=1.0), engine.stats()
        stats = engine.stats()
        assert stats.running == 0
        assert stats.waiting == 0


async def test_a_cancelled_consumer_aborts_its_request(config: EngineConfig) -> None:
    async with running(config) as engine:
        first = asyncio.Event()

        async def consume() -> None:
            async for _output in engine.generate("cancelled", [1, 40, 41, 42], LONG):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await poll(lambda: engine.stats().running == 0, within_s=1.0)
        assert engine.stats().kv_blocks_used == 0


async def test_a_full_waiting_queue_refuses_with_queue_full(config: EngineConfig) -> None:
    async with running(replace(config, max_num_seqs=1, max_waiting=2)) as engine:
        busy = engine.generate("busy", [1, 50, 51], LONG)
        await anext(busy)  # running: the only seat
        waiters = [engine.generate(f"w{i}", [1, 60 + i], LONG) for i in range(2)]
        tasks = [asyncio.create_task(first_of(w)) for w in waiters]
        await asyncio.sleep(0)  # both admitted (they wait for a seat)
        with pytest.raises(QueueFullError, match="max_waiting is 2"):
            await anext(engine.generate("one-too-many", [1, 70], LONG))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in [busy, *waiters]:
            await stream.aclose()


async def test_a_request_id_in_use_is_refused(config: EngineConfig) -> None:
    async with running(config) as engine:
        stream = engine.generate("same", [1, 50], LONG)
        await anext(stream)
        with pytest.raises(InvalidRequestError, match="already in use"):
            await anext(engine.generate("same", [1, 51], LONG))
        await stream.aclose()


async def test_not_ready_before_start_and_after_stop(config: EngineConfig) -> None:
    engine = LLMEngine(config)
    assert not is_ready(engine)
    with pytest.raises(EngineNotReadyError, match="loading"):
        await anext(engine.generate("early", [1, 2], LONG))
    engine.start()
    await asyncio.to_thread(engine.wait_ready, 120)
    assert is_ready(engine)
    engine.stop()
    assert not is_ready(engine)
    with pytest.raises(EngineNotReadyError, match="stopping"):
        await anext(engine.generate("late", [1, 2], LONG))


async def test_stop_ends_every_stream_with_abort(config: EngineConfig) -> None:
    engine = LLMEngine(config)
    engine.start()
    await asyncio.to_thread(engine.wait_ready, 120)
    streams = [engine.generate(f"s{i}", [1, 30 + i], LONG) for i in range(4)]
    for stream in streams:
        await anext(stream)
    await asyncio.to_thread(engine.stop)
    for stream in streams:
        rest = [output async for output in stream]
        assert rest[-1].finished
        assert rest[-1].finish_reason == "abort"
    assert engine.stats().kv_blocks_used == 0


async def test_on_step_reports_every_step(config: EngineConfig) -> None:
    steps: list[StepInfo] = []
    async with running(config, on_step=steps.append) as engine:
        outputs = [o async for o in engine.generate("hook", [1, 80, 81, 82], replace(LONG, max_tokens=5))]
    assert len(outputs) == 5
    assert steps[0].num_prefill_tokens == 4
    assert sum(s.num_decode_tokens for s in steps) == 4
    assert all(s.duration_s >= 0 for s in steps)


async def test_a_stop_string_cuts_the_text_through_the_engine(config: EngineConfig) -> None:
    async with running(config) as engine:
        prompt = engine.tokenizer.apply_chat_template([{"role": "user", "content": "Say something."}])
        params = replace(LONG, max_tokens=30)
        full = "".join([o.text async for o in engine.generate("full", prompt, params)])
        stop = full.strip()[len(full.strip()) // 2 :][:3]
        assert stop, full
        outputs = [o async for o in engine.generate("cut", prompt, replace(params, stop=(stop,)))]
    text = "".join(o.text for o in outputs)
    assert outputs[-1].finish_reason == "stop"
    assert text == full[: full.index(stop)]


async def test_bfloat16_runs_on_cpu(config: EngineConfig) -> None:
    async with running(replace(config, dtype="bfloat16")) as engine:
        outputs = [o async for o in engine.generate("bf16", [1, 90, 91], replace(LONG, max_tokens=4))]
    assert len(outputs) == 4


async def test_int8_weights_generate_nearly_the_same_text(config: EngineConfig) -> None:
    params = replace(LONG, max_tokens=8)
    prompt = [1, 100, 101, 102, 103]
    async with running(config) as engine:
        full = [t for o in [o async for o in engine.generate("fp32", prompt, params)] for t in o.token_ids]
    async with running(replace(config, quantization="int8")) as engine:
        quantized = [
            t for o in [o async for o in engine.generate("int8", prompt, params)] for t in o.token_ids
        ]
    assert len(quantized) == 8
    assert quantized[0] == full[0]  # per-channel int8 keeps the first greedy token of a tiny model


def test_float16_on_cpu_is_refused_at_construction(config: EngineConfig) -> None:
    with pytest.raises(ValueError, match="float16 is not supported on CPU"):
        LLMEngine(replace(config, dtype="float16"))


def test_info_lists_the_model_and_its_context(config: EngineConfig, model_dir: Path) -> None:
    engine = LLMEngine(replace(config, model_name="tiny", max_model_len=256))
    assert engine.info.name == "tiny"
    assert engine.info.max_model_len == 256
    assert LLMEngine(config).info.max_model_len == 512  # max_position_embeddings
    assert LLMEngine(config).info.name == model_dir.name


async def test_generation_outputs_add_up(config: EngineConfig) -> None:
    async with running(config) as engine:
        prompt = engine.tokenizer.encode("Café, naïve")
        outputs: list[GenerationOutput] = [
            o async for o in engine.generate("sum", prompt, replace(LONG, max_tokens=10))
        ]
    ids = [t for o in outputs for t in o.token_ids]
    assert [o.completion_tokens for o in outputs] == list(range(1, 11))
    assert all(o.prompt_tokens == len(prompt) for o in outputs)
    assert "".join(o.text for o in outputs) == engine.tokenizer.decode(ids)


def test_the_engine_is_an_engine(config: EngineConfig) -> None:
    engine: Engine = LLMEngine(config)  # mypy checks the protocol
    assert engine.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])[0] == 1  # BOS
    with pytest.raises(RuntimeError, match="start"):
        LLMEngine(config).wait_ready(1)
