"""The model code's pieces against plain arithmetic and transformers: config, rotary, attention, int8."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from modelplane.serving.runtime.generative.attention import AttentionMetadata, PrefillSegment, paged_attention
from modelplane.serving.runtime.generative.llama import (
    Int8Linear,
    Linear,
    LlamaArgs,
    UnsupportedModelError,
    rope_inv_freq,
)
from modelplane.serving.runtime.generative.loader import read_model_config, resolve_dtype

BASE: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 100,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}


def test_rope_theta_is_read_from_either_generation_of_configs() -> None:
    assert (
        LlamaArgs.from_hf_config(
            {**BASE, "rope_parameters": {"rope_theta": 5e5, "rope_type": "default"}}
        ).rope_theta
        == 5e5
    )
    assert LlamaArgs.from_hf_config({**BASE, "rope_theta": 1e6}).rope_theta == 1e6
    assert LlamaArgs.from_hf_config(BASE).rope_theta == 10000.0


def test_an_unsupported_rope_scaling_is_refused_by_name() -> None:
    with pytest.raises(UnsupportedModelError, match="yarn"):
        LlamaArgs.from_hf_config({**BASE, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})


def test_llama3_rope_scaling_matches_transformers() -> None:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
        "rope_theta": 500000.0,
    }
    config: Any = LlamaConfig(
        **{k: v for k, v in BASE.items() if k != "architectures"}, rope_parameters=scaling
    )
    theirs, _ = ROPE_INIT_FUNCTIONS["llama3"](config, torch.device("cpu"))
    mine = rope_inv_freq(LlamaArgs.from_hf_config(json.loads(config.to_json_string())))
    torch.testing.assert_close(mine, theirs.float())


def test_unsupported_architectures_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**BASE, "architectures": ["GPTNeoXForCausalLM"]}))
    with pytest.raises(UnsupportedModelError, match="GPTNeoXForCausalLM"):
        read_model_config(tmp_path)


def test_eos_ids_come_from_the_config_and_the_generation_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**BASE, "eos_token_id": 2}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    assert read_model_config(tmp_path).eos_token_ids == {2, 7}


def test_half_precision_on_cpu_float16_refused() -> None:
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="float16"):
        resolve_dtype("float16", cpu, {})
    assert resolve_dtype("auto", cpu, {"dtype": "bfloat16"}) == torch.float32
    assert resolve_dtype("bf16", cpu, {}) == torch.bfloat16


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of one sequence, [tokens, heads, dim], GQA by repeating the KV heads."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True
    )
    return out.transpose(0, 1)


def test_paged_attention_of_chunks_and_decodes_equals_dense_attention() -> None:
    torch.manual_seed(0)
    heads, kv_heads, dim, bs = 4, 2, 8, 4
    lengths = [11, 6]  # sequence 0: a decode at position 10; sequence 1: a chunk at 3..5
    qs = [torch.randn(n, heads, dim) for n in lengths]
    ks = [torch.randn(n, kv_heads, dim) for n in lengths]
    vs = [torch.randn(n, kv_heads, dim) for n in lengths]
    tables = [[5, 2, 7], [0, 3]]  # scattered blocks
    k_cache, v_cache = torch.zeros(8 * bs, kv_heads, dim), torch.zeros(8 * bs, kv_heads, dim)

    def slots(seq: int, positions: range) -> torch.Tensor:
        return torch.tensor([tables[seq][p // bs] * bs + p % bs for p in positions])

    for seq, done in ((0, 10), (1, 3)):  # what earlier steps wrote
        k_cache[slots(seq, range(done))] = ks[seq][:done]
        v_cache[slots(seq, range(done))] = vs[seq][:done]
    step_slots = torch.cat([slots(0, range(10, 11)), slots(1, range(3, 6))])
    q = torch.cat([qs[0][10:], qs[1][3:]])
    k = torch.cat([ks[0][10:], ks[1][3:]])
    v = torch.cat([vs[0][10:], vs[1][3:]])
    k_cache[step_slots], v_cache[step_slots] = k, v
    meta = AttentionMetadata(
        slot_mapping=step_slots,
        block_size=bs,
        num_decodes=1,
        decode_blocks=torch.tensor([tables[0]]),
        decode_mask=(torch.arange(12) < 11).view(1, 1, 1, 12),
        prefills=(
            PrefillSegment(
                1, 4, torch.tensor(tables[1]), torch.arange(8).unsqueeze(0) <= torch.arange(3, 6).unsqueeze(1)
            ),
        ),
    )
    out = paged_attention(q, k, v, k_cache, v_cache, meta)
    torch.testing.assert_close(out[0], dense_attention(qs[0], ks[0], vs[0])[10])
    torch.testing.assert_close(out[1:], dense_attention(qs[1], ks[1], vs[1])[3:])


def test_int8_linear_is_close_to_the_float_one() -> None:
    torch.manual_seed(0)
    linear = Linear(32, 16, bias=True, dtype=torch.float32)
    linear.weight.data.normal_()
    assert linear.bias is not None
    linear.bias.data.normal_()
    quantized = Int8Linear(linear)
    x = torch.randn(5, 32)
    assert quantized.qweight.dtype == torch.int8
    expected = linear(x)
    assert float((quantized(x) - expected).norm() / expected.norm()) < 0.02
