"""The engine's settings: one frozen value, checked once when the engine is built.

Everything that sizes the batch or the KV cache lives here, so a deployment's knobs are one
dataclass (the API layer and the CLI fill it in; the engine never reads the environment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DTypeName = Literal["auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16"]
Quantization = Literal["int8"]

# A CPU has no "free memory after the weights" worth measuring; the cache gets a fixed budget.
DEFAULT_CPU_KV_CACHE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class EngineConfig:
    """How to load the model and how big the batch and the KV cache may grow.

    ``max_model_len`` (prompt plus completion) defaults to the model's
    ``max_position_embeddings``. The KV cache takes ``kv_cache_bytes`` when set (any device);
    otherwise :data:`DEFAULT_CPU_KV_CACHE_BYTES` on CPU, and ``gpu_memory_fraction`` of the GPU
    memory still free after the weights are loaded on CUDA (the rest is headroom for activations).
    """

    model_dir: str
    model_name: str | None = None  # what ModelInfo lists; the directory's name by default
    dtype: DTypeName = "auto"  # auto: the checkpoint's dtype on CUDA, float32 on CPU
    device: str = "auto"  # auto: cuda when visible, else cpu; or "cpu", "cuda", "cuda:1"
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    max_model_len: int | None = None
    kv_cache_bytes: int | None = None
    gpu_memory_fraction: float = 0.9
    max_waiting: int = 1024
    enable_prefix_caching: bool = True
    quantization: Quantization | None = None
    seed: int | None = None  # for requests without a seed; None: a fresh random stream per engine

    def check(self) -> None:
        """Raise ValueError naming the first setting out of range (a deployment error, not a 400)."""
        positive = {
            "block_size": self.block_size,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "max_waiting": self.max_waiting,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be at least max_num_seqs "
                f"({self.max_num_seqs}): every running sequence needs its decode token in each step"
            )
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be at least 1, got {self.max_model_len}")
        if self.kv_cache_bytes is not None and self.kv_cache_bytes < 1:
            raise ValueError(f"kv_cache_bytes must be positive, got {self.kv_cache_bytes}")
        if not 0 < self.gpu_memory_fraction <= 1:
            raise ValueError(f"gpu_memory_fraction must be in (0, 1], got {self.gpu_memory_fraction}")
        if self.quantization not in (None, "int8"):
            raise ValueError(f"quantization must be None or 'int8', got {self.quantization!r}")
