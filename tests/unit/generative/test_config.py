"""EngineConfig.check refuses settings that cannot work, naming them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from modelplane.serving.runtime.generative.config import EngineConfig

BASE = EngineConfig(model_dir="/models/tiny")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"block_size": 0}, "block_size"),
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"max_num_seqs": 8, "max_num_batched_tokens": 4}, "max_num_batched_tokens"),
        ({"max_waiting": 0}, "max_waiting"),
        ({"max_model_len": 0}, "max_model_len"),
        ({"kv_cache_bytes": 0}, "kv_cache_bytes"),
        ({"gpu_memory_fraction": 0.0}, "gpu_memory_fraction"),
        ({"gpu_memory_fraction": 1.5}, "gpu_memory_fraction"),
        ({"quantization": "int4"}, "quantization"),
    ],
)
def test_bad_settings_are_named(change: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        replace(BASE, **change).check()


def test_the_defaults_pass() -> None:
    BASE.check()
    assert BASE.enable_prefix_caching
    assert BASE.block_size == 16
