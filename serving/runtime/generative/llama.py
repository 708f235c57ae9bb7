"""The Llama architecture (also Mistral and Qwen2, which share its weight layout) over a paged cache.

Our own modules rather than transformers' modeling code, so that attention reads and writes the
paged KV cache and a step is one flat batch of tokens from many sequences. The arithmetic follows
Hugging Face's ``LlamaForCausalLM`` (RMSNorm in float32, rotate-half rotary embeddings, SwiGLU), so
greedy outputs match it. Q/K/V and gate/up projections are fused into one matmul each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn

from modelplane.serving.runtime.generative.attention import AttentionMetadata, paged_attention, write_kv


class UnsupportedModelError(ValueError):
    """The checkpoint asks for something this model code does not implement."""


@dataclass(frozen=True)
class LlamaArgs:
    """The shape of the network, from a Hugging Face ``config.json``."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    rope_scaling: tuple[tuple[str, Any], ...] = ()  # sorted items; () for plain rotary
    sliding_window: int | None = None

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> LlamaArgs:
        act = config.get("hidden_act", "silu")
        if act != "silu":
            raise UnsupportedModelError(f"hidden_act {act!r} is not supported (only silu)")
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        rope = dict(config.get("rope_parameters") or {})  # transformers 5
        scaling = dict(config.get("rope_scaling") or rope)  # transformers 4
        theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
        scaling.pop("rope_theta", None)
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind not in ("default", "linear", "llama3"):
            raise UnsupportedModelError(
                f"rope_scaling type {kind!r} is not supported (default, linear, llama3)"
            )
        model_type = config.get("model_type", "llama")
        window = config.get("sliding_window")
        if model_type == "qwen2" and not config.get("use_sliding_window", False):
            window = None
        # Llama's attention_bias covers all four projections; Qwen2 has Q/K/V biases without
        # saying so; Mistral has none.
        llama_bias = model_type == "llama" and bool(config.get("attention_bias", False))
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=llama_bias or model_type == "qwen2",
            o_bias=llama_bias,
            mlp_bias=model_type == "llama" and bool(config.get("mlp_bias", False)),
            rope_scaling=tuple(sorted(scaling.items())) if kind != "default" else (),
            sliding_window=int(window) if window else None,
        )


def rope_inv_freq(args: LlamaArgs) -> torch.Tensor:
    """Rotary frequencies as Hugging Face computes them, with linear or Llama 3 scaling."""
    dim = args.head_dim
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = dict(args.rope_scaling)
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
        return torch.where(medium, smoothed, scaled)
    return inv_freq


class RotaryEmbedding(nn.Module):
    """Cos/sin tables for every position up to the context length, in the model's dtype."""

    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, args: LlamaArgs, max_len: int, dtype: torch.dtype) -> None:
        super().__init__()
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), rope_inv_freq(args))
        table = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", table.cos().to(dtype), persistent=False)
        self.register_buffer("sin", table.sin().to(dtype), persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``[tokens, heads, head_dim]`` by each token's position."""
        cos = self.cos[positions].unsqueeze(1)
        sin = self.sin[positions].unsqueeze(1)
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin


class Linear(nn.Module):
    """``y = x W^T + b`` with uninitialized weights (the checkpoint fills them)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype), requires_grad=False)
        self.bias = (
            nn.Parameter(torch.empty(out_features, dtype=dtype), requires_grad=False) if bias else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Int8Linear(nn.Module):
    """Weight-only int8: each output channel scaled by its largest magnitude / 127.

    Halves (bf16) or quarters (fp32) the weights' memory; the weight is dequantized on the fly
    for the matmul, so it trades some speed for memory.
    """

    qweight: torch.Tensor
    scale: torch.Tensor

    def __init__(self, linear: Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)
        self.register_buffer(
            "qweight", torch.round(weight / scale.unsqueeze(1)).clamp(-127, 127).to(torch.int8)
        )
        self.register_buffer("scale", scale.to(linear.weight.dtype))
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.qweight.to(x.dtype)) * self.scale
        return out + self.bias if self.bias is not None else out


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dtype=dtype), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, args: LlamaArgs, dtype: torch.dtype) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = args.num_heads, args.num_kv_heads, args.head_dim
        q_size, kv_size = args.num_heads * args.head_dim, args.num_kv_heads * args.head_dim
        self.qkv_proj: nn.Module = Linear(args.hidden_size, q_size + 2 * kv_size, args.qkv_bias, dtype)
        self.o_proj: nn.Module = Linear(q_size, args.hidden_size, args.o_bias, dtype)
        self.sizes = [q_size, kv_size, kv_size]

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        rotary: RotaryEmbedding,
        cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        tokens = x.shape[0]
        q, k, v = self.qkv_proj(x).split(self.sizes, dim=-1)
        q = rotary(q.reshape(tokens, self.num_heads, self.head_dim), positions)
        k = rotary(k.reshape(tokens, self.num_kv_heads, self.head_dim), positions)
        v = v.reshape(tokens, self.num_kv_heads, self.head_dim)
        write_kv(cache[0], cache[1], k, v, meta.slot_mapping)
        out = paged_attention(q, k, v, cache[0], cache[1], meta)
        result: torch.Tensor = self.o_proj(out.reshape(tokens, self.num_heads * self.head_dim))
        return result


class MLP(nn.Module):
    def __init__(self, args: LlamaArgs, dtype: torch.dtype) -> None:
        super().__init__()
        self.gate_up_proj: nn.Module = Linear(
            args.hidden_size, 2 * args.intermediate_size, args.mlp_bias, dtype
        )
        self.down_proj: nn.Module = Linear(args.intermediate_size, args.hidden_size, args.mlp_bias, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        result: torch.Tensor = self.down_proj(F.silu(gate) * up)
        return result


class DecoderLayer(nn.Module):
    def __init__(self, args: LlamaArgs, dtype: torch.dtype) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps, dtype)
        self.self_attn = Attention(args, dtype)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps, dtype)
        self.mlp = MLP(args, dtype)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        rotary: RotaryEmbedding,
        cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), positions, rotary, cache, meta)
        result: torch.Tensor = x + self.mlp(self.post_attention_layernorm(x))
        return result


class LlamaBody(nn.Module):
    def __init__(self, args: LlamaArgs, dtype: torch.dtype) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(
            args.vocab_size,
            args.hidden_size,
            dtype=dtype,
            _weight=torch.empty(args.vocab_size, args.hidden_size, dtype=dtype),
        )
        self.embed_tokens.weight.requires_grad_(False)
        self.layers = nn.ModuleList(DecoderLayer(args, dtype) for _ in range(args.num_layers))
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps, dtype)


class LlamaForCausalLM(nn.Module):
    """Parameter names mirror Hugging Face's, except the fused ``qkv_proj`` and ``gate_up_proj``."""

    def __init__(self, args: LlamaArgs, max_len: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.args = args
        self.model = LlamaBody(args, dtype)
        self.lm_head: Linear | None = (
            None if args.tie_word_embeddings else Linear(args.hidden_size, args.vocab_size, False, dtype)
        )
        self.rotary = RotaryEmbedding(args, max_len, dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        caches: list[tuple[torch.Tensor, torch.Tensor]],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """The final hidden states ``[tokens, hidden]`` of the flat batch."""
        x = self.model.embed_tokens(input_ids)
        for layer, cache in zip(self.model.layers, caches, strict=True):
            x = layer(x, positions, self.rotary, cache, meta)
        result: torch.Tensor = self.model.norm(x)
        return result

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits for the rows that sample (only those go through the vocabulary matmul)."""
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(hidden, weight).float()
