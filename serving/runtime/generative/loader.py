"""Read a Hugging Face model directory: its config, its safetensors weights, onto a device.

Only architectures whose checkpoints have Llama's tensor layout are accepted; anything else
is refused with its name rather than loaded wrongly. Weights are copied straight into the
model's (uninitialized) parameters, Q/K/V and gate/up into their fused matrices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from modelplane.serving.runtime.generative.config import DTypeName
from modelplane.serving.runtime.generative.llama import (
    Int8Linear,
    Linear,
    LlamaArgs,
    LlamaForCausalLM,
    UnsupportedModelError,
)

ARCHITECTURES = frozenset({"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"})
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_FUSED = {  # Hugging Face projection -> (our fused module, which part)
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}


@dataclass(frozen=True)
class ModelConfig:
    """What the engine needs from ``config.json`` and ``generation_config.json``."""

    path: Path
    args: LlamaArgs
    raw: dict[str, Any]
    eos_token_ids: frozenset[int]


def read_model_config(model_dir: str | Path) -> ModelConfig:
    path = Path(model_dir)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory: no config.json")
    raw: dict[str, Any] = json.loads(config_file.read_text())
    architectures = raw.get("architectures") or ["LlamaForCausalLM"]
    unsupported = [a for a in architectures if a not in ARCHITECTURES]
    if unsupported:
        raise UnsupportedModelError(
            f"architecture {unsupported[0]} is not supported; supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    eos: set[int] = set()
    generation_file = path / "generation_config.json"
    sources = [raw.get("eos_token_id")]
    if generation_file.is_file():
        sources.append(json.loads(generation_file.read_text()).get("eos_token_id"))
    for value in sources:
        if isinstance(value, int):
            eos.add(value)
        elif isinstance(value, list):
            eos.update(int(v) for v in value)
    return ModelConfig(path=path, args=LlamaArgs.from_hf_config(raw), raw=raw, eos_token_ids=frozenset(eos))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA device is visible")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {name!r}")
    return device


def resolve_dtype(name: DTypeName, device: torch.device, config: dict[str, Any]) -> torch.dtype:
    """The compute dtype; half precision only where it works (float16 never on CPU)."""
    if name == "auto":
        if device.type == "cpu":
            return torch.float32
        declared = str(config.get("dtype") or config.get("torch_dtype") or "float32")
        return _DTYPES.get(declared, torch.float32)
    dtype = _DTYPES[name]
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("float16 is not supported on CPU (slow, inexact matmuls): use float32 or bfloat16")
    if device.type == "cpu" and dtype == torch.bfloat16:
        try:
            torch.ones(2, 2, dtype=dtype) @ torch.ones(2, 2, dtype=dtype)
        except RuntimeError as exc:
            raise ValueError(f"bfloat16 does not work on this CPU: {exc}") from exc
    return dtype


def _weight_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {path}")
    return files


def load_model(
    config: ModelConfig,
    max_len: int,
    dtype: torch.dtype,
    device: torch.device,
    quantization: str | None = None,
) -> LlamaForCausalLM:
    """The model with the checkpoint's weights on ``device``, ready for inference."""
    args = config.args
    with torch.device(device):
        model = LlamaForCausalLM(args, max_len, dtype)
    params = dict(model.named_parameters())
    filled: dict[str, int] = {}
    q_size, kv_size = args.num_heads * args.head_dim, args.num_kv_heads * args.head_dim
    split_sizes = {"qkv_proj": [q_size, kv_size, kv_size], "gate_up_proj": [args.intermediate_size] * 2}
    for file in _weight_files(config.path):
        with safe_open(str(file), framework="pt", device=str(device)) as reader:
            for name in reader.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if "rotary_emb" in name:
                    continue
                if name == "lm_head.weight" and args.tie_word_embeddings:
                    continue
                target, offset, size = _target(name, split_sizes)
                if target not in params:
                    raise UnsupportedModelError(
                        f"unexpected tensor {name!r} in {file.name}: not a Llama layout"
                    )
                tensor = reader.get_tensor(name)
                param = params[target].data
                part = param.narrow(0, offset, size) if size else param
                if tuple(part.shape) != tuple(tensor.shape):
                    raise UnsupportedModelError(
                        f"{name}: shape {tuple(tensor.shape)}, expected {tuple(part.shape)}"
                    )
                part.copy_(tensor)
                filled[target] = filled.get(target, 0) + 1
    expected = {n: len(split_sizes.get(n.split(".")[-2], [0])) for n in params}
    missing = sorted(n for n, count in expected.items() if filled.get(n, 0) < count)
    if missing:
        raise UnsupportedModelError(f"the checkpoint lacks {missing[0]} (and {len(missing) - 1} more)")
    if quantization == "int8":
        quantize_int8(model)
    return model.eval()


def _target(name: str, split_sizes: dict[str, list[int]]) -> tuple[str, int, int]:
    """Our parameter for a checkpoint tensor, with its row offset and size in a fused matrix."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[-2] in _FUSED:
        fused, index = _FUSED[parts[-2]]
        sizes = split_sizes[fused]
        return ".".join([*parts[:-2], fused, parts[-1]]), sum(sizes[:index]), sizes[index]
    return name, 0, 0


def quantize_int8(model: torch.nn.Module) -> None:
    """Replace every projection inside the decoder layers by its weight-only int8 version."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, Linear) and child_name != "lm_head":
                setattr(module, child_name, Int8Linear(child))
