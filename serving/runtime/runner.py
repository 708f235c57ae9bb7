"""Run one batch through a torch module: numpy in, numpy out, on the model's device and precision.

Called from a worker thread (never the event loop) under ``torch.inference_mode()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from modelplane.serving.runtime.config import ModelSpec
from modelplane.serving.runtime.datatypes import NUMPY_DTYPES
from modelplane.serving.runtime.torch_types import TORCH_DTYPES


class ModelError(RuntimeError):
    """The model raised or returned something that does not fit its config (a 500 for the request)."""


def pick_device(device_kind: str) -> torch.device:
    """GPU when the config asks for it or leaves it open and CUDA is visible; CPU otherwise."""
    if device_kind == "CPU" or not torch.cuda.is_available():
        if device_kind == "GPU":
            raise ModelError("instance_group asks for KIND_GPU but no CUDA device is visible")
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


class TorchRunner:
    """Holds a loaded module with its config and device; ``run`` is thread-safe per call."""

    def __init__(self, module: Callable[..., Any], spec: ModelSpec, device: torch.device) -> None:
        self.module = module
        self.spec = spec
        self.device = device
        self._compute_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(spec.precision)
        self._in_dtypes = [TORCH_DTYPES[t.datatype] for t in spec.inputs]
        self._out_dtypes = [TORCH_DTYPES[t.datatype] for t in spec.outputs]
        self._out_bf16 = [t.datatype == "BF16" for t in spec.outputs]

    def _to_tensor(self, array: np.ndarray[Any, Any], dtype: torch.dtype) -> torch.Tensor:
        if dtype == torch.bfloat16:
            tensor = torch.from_numpy(np.ascontiguousarray(array).view(np.int16)).view(torch.bfloat16)
        else:
            if not array.flags.writeable:
                array = array.copy()
            tensor = torch.from_numpy(array)
        if self.device.type != "cpu":
            tensor = tensor.to(self.device, non_blocking=True)
        if self._compute_dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(self._compute_dtype)
        return tensor

    def run(self, inputs: Sequence[np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
        """Forward one (possibly batched) set of inputs; outputs in the config's output order."""
        with torch.inference_mode():
            tensors = [self._to_tensor(a, d) for a, d in zip(inputs, self._in_dtypes, strict=True)]
            try:
                result = self.module(*tensors)
            except Exception as exc:
                raise ModelError(f"model {self.spec.name!r} raised {type(exc).__name__}: {exc}") from exc
            outputs = self._as_list(result)
            arrays: list[np.ndarray[Any, Any]] = []
            for tensor, dtype, bf16 in zip(outputs, self._out_dtypes, self._out_bf16, strict=True):
                tensor = tensor.detach().to(dtype).cpu()
                arrays.append(tensor.view(torch.int16).numpy().view(np.uint16) if bf16 else tensor.numpy())
            return arrays

    def _as_list(self, result: Any) -> list[torch.Tensor]:
        names = [t.name for t in self.spec.outputs]
        if isinstance(result, torch.Tensor):
            found: list[Any] = [result]
        elif isinstance(result, list | tuple):
            found = list(result)
        elif isinstance(result, dict):
            missing = [n for n in names if n not in result]
            if missing:
                raise ModelError(f"model {self.spec.name!r} returned a dict without outputs {missing}")
            found = [result[n] for n in names]
        else:
            raise ModelError(f"model {self.spec.name!r} returned {type(result).__name__}, not tensors")
        if len(found) != len(names) or not all(isinstance(t, torch.Tensor) for t in found):
            raise ModelError(
                f"model {self.spec.name!r} returned {len(found)} values; its config declares outputs {names}"
            )
        return found

    def warm_up(self) -> None:
        """One forward with zeros of the smallest valid shape, so the first request is not slow."""
        inputs = [
            np.zeros(
                tuple(1 if d == -1 else d for d in self.spec.input_shape(t)), dtype=NUMPY_DTYPES[t.datatype]
            )
            for t in self.spec.inputs
        ]
        self.run(inputs)
