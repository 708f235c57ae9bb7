"""The protocol-neutral inference step: validate against the model, run through its batcher, pick outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelplane.serving.runtime.codec import InferRequest
from modelplane.serving.runtime.errors import InferenceError
from modelplane.serving.runtime.models import ServedModel
from modelplane.serving.runtime.runner import ModelError
from modelplane.serving.runtime.shared_memory import SharedMemoryRegistry
from modelplane.serving.runtime.validation import validate

#: (name, V2 datatype, array, binary) for each output to return.
Output = tuple[str, str, np.ndarray[Any, Any], bool]


async def infer(
    model: ServedModel, request: InferRequest, shared_memory: SharedMemoryRegistry | None = None
) -> list[Output]:
    """Run one request; a model failure becomes a 500 for this request only.

    Outputs the request placed in shared memory are written there (the front ends then answer them
    without data: ``request.shared_outputs()``).
    """
    valid = validate(model.spec, request)
    try:
        arrays = await model.infer(valid.arrays, valid.batch_size)
    except ModelError as exc:
        raise InferenceError(str(exc), 500) from None
    index = {t.name: (i, t.datatype) for i, t in enumerate(model.spec.outputs)}
    result: list[Output] = []
    shared = [
        (out.name, out.place, arrays[index[out.name][0]]) for out in valid.outputs if out.place is not None
    ]
    if shared:
        if shared_memory is None:
            raise InferenceError("outputs in shared memory: shared memory is not served here", 400)
        for name, place, array in shared:  # every place is checked before any is written
            shared_memory.check(f"output {name!r}", place, array.nbytes)
        for name, place, array in shared:
            shared_memory.write(f"output {name!r}", place, array)
    for out in valid.outputs:
        i, datatype = index[out.name]
        result.append((out.name, datatype, arrays[i], out.binary))
    return result


def model_metadata(model: ServedModel, versions: list[int]) -> dict[str, Any]:
    """V2 model metadata; shapes include the batch dim (-1) when the model batches, as Triton's do."""
    spec = model.spec
    return {
        "name": spec.name,
        "versions": [str(v) for v in versions],
        "platform": spec.platform,
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(spec.input_shape(t))} for t in spec.inputs
        ],
        "outputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(spec.input_shape(t))} for t in spec.outputs
        ],
    }
