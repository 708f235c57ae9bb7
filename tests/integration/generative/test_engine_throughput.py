"""Decode throughput of the engine and of transformers' generate on CPU: printed, never asserted.

The tiny model always runs (seconds); the ~50M-parameter Llama runs when
``MODELPLANE_GENERATIVE_BENCH=1`` (about a minute on two cores). Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from modelplane.serving.runtime.generative.config import EngineConfig
from modelplane.serving.runtime.generative.engine import LLMEngine
from modelplane.serving.runtime.generative.tokenizer import HFTokenizer
from modelplane.testing.generative import (
    LLAMA_50M,
    Throughput,
    make_llama_dir,
    make_tokenizer_dir,
    measure_engine,
    measure_transformers,
    same_length_prompts,
)

STREAMS = 32
MAX_TOKENS = 64


def report(label: str, found: Throughput) -> None:
    print(
        f"{label:<28} single stream {found.single_stream_tokens_per_s:8.1f} tok/s   "
        f"{found.streams} streams {found.aggregate_tokens_per_s:8.1f} tok/s"
    )


async def measure(model_dir: Path, label: str) -> None:
    prompts = same_length_prompts(HFTokenizer(model_dir).encode, STREAMS)
    config = EngineConfig(
        model_dir=str(model_dir), dtype="float32", device="cpu", max_num_seqs=STREAMS, kv_cache_bytes=64 << 20
    )
    engine = LLMEngine(config)
    engine.start()
    await asyncio.to_thread(engine.wait_ready, 300)
    try:
        mine = await measure_engine(engine, prompts, MAX_TOKENS)
    finally:
        engine.stop()
    theirs = await asyncio.to_thread(measure_transformers, model_dir, prompts, MAX_TOKENS)
    print()
    report(f"engine, {label}", mine)
    report(f"transformers, {label}", theirs)


@pytest.mark.parametrize(
    ("label", "shape"),
    [
        pytest.param("tiny", {}, id="tiny"),
        pytest.param(
            "50M",
            LLAMA_50M,
            id="llama-50m",
            marks=[
                pytest.mark.slow,
                pytest.mark.skipif(
                    os.environ.get("MODELPLANE_GENERATIVE_BENCH") != "1",
                    reason="MODELPLANE_GENERATIVE_BENCH=1 runs it",
                ),
            ],
        ),
    ],
)
async def test_print_decode_throughput(tmp_path: Path, label: str, shape: dict[str, Any]) -> None:
    model_dir = make_llama_dir(tmp_path / "model", make_tokenizer_dir(tmp_path / "tokenizer"), **shape)
    await measure(model_dir, label)
