"""Check a decoded request against the model's contract: names, datatypes, shapes, batch size.

Pure functions shared by the HTTP and gRPC front ends, so both refuse the same requests with the
same messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelplane.serving.runtime.codec import InferRequest, RequestedOutput, Tensor
from modelplane.serving.runtime.config import ModelSpec
from modelplane.serving.runtime.errors import bad_request


@dataclass(slots=True)
class ValidRequest:
    """Inputs in the model's declared order, the batch size, and which outputs to return."""

    arrays: list[np.ndarray[Any, Any]]
    batch_size: int
    outputs: list[RequestedOutput]


def shape_matches(pattern: Sequence[int], shape: Sequence[int]) -> bool:
    """Whether ``shape`` fits ``pattern`` (-1 in the pattern matches any size)."""
    return len(pattern) == len(shape) and all(p == -1 or p == s for p, s in zip(pattern, shape, strict=True))


def validate(spec: ModelSpec, request: InferRequest) -> ValidRequest:
    """Match the request's tensors to the model's inputs; raise a 400 naming the first mismatch."""
    by_name: dict[str, Tensor] = {}
    for tensor in request.inputs:
        if tensor.name in by_name:
            raise bad_request(f"input {tensor.name!r} appears more than once")
        by_name[tensor.name] = tensor
    expected = [t.name for t in spec.inputs]
    extra = [name for name in by_name if name not in expected]
    if extra:
        raise bad_request(f"model {spec.name!r} has no input {extra[0]!r}; its inputs are {expected}")
    arrays: list[np.ndarray[Any, Any]] = []
    batch: int | None = None
    for input_spec in spec.inputs:
        found = by_name.get(input_spec.name)
        if found is None:
            raise bad_request(f"model {spec.name!r} needs input {input_spec.name!r}; the request lacks it")
        tensor = found
        if tensor.datatype != input_spec.datatype:
            raise bad_request(
                f"input {tensor.name!r}: datatype {tensor.datatype} does not match the model's "
                f"{input_spec.datatype}"
            )
        pattern = spec.input_shape(input_spec)
        if not shape_matches(pattern, tensor.shape):
            raise bad_request(
                f"input {tensor.name!r}: shape {list(tensor.shape)} does not match the model's "
                f"{list(pattern)} (-1 = any size"
                + (", first dim = batch" if spec.max_batch_size > 0 else "")
                + ")"
            )
        if spec.max_batch_size > 0:
            size = tensor.shape[0]
            if size < 1 or size > spec.max_batch_size:
                raise bad_request(
                    f"input {tensor.name!r}: batch size {size} is outside 1..{spec.max_batch_size} "
                    "(the model's max_batch_size)"
                )
            if batch is not None and size != batch:
                raise bad_request(f"inputs disagree on the batch size ({batch} and {size})")
            batch = size
        arrays.append(tensor.array)
    return ValidRequest(arrays, batch or 1, select_outputs(spec, request))


def select_outputs(spec: ModelSpec, request: InferRequest) -> list[RequestedOutput]:
    """The outputs to return, in request order (all of them, in config order, when none are named)."""
    names = [t.name for t in spec.outputs]
    if request.outputs is None:
        return [RequestedOutput(name, request.binary_output) for name in names]
    seen: set[str] = set()
    for output in request.outputs:
        if output.name not in names:
            raise bad_request(f"model {spec.name!r} has no output {output.name!r}; its outputs are {names}")
        if output.name in seen:
            raise bad_request(f"output {output.name!r} is requested more than once")
        seen.add(output.name)
    return list(request.outputs)
