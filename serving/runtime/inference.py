"""The protocol-neutral inference step: validate against the model, run through its batcher, pick outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelplane.serving.runtime.codec import InferRequest
from modelplane.serving.runtime.errors import InferenceError
from modelplane.serving.runtime.models import ServedModel
from modelplane.serving.runtime.runner import ModelError
from modelplane.serving.runtime.validation import validate

#: (name, V2 datatype, array, binary) for each output to return.
Output = tuple[str, str, np.ndarray[Any, Any], bool]


async def infer(model: ServedModel, request: InferRequest) -> list[Output]:
    """Run one request; a model failure becomes a 500 for this request only."""
    valid = validate(model.spec, request)
    try:
        arrays = await model.infer(valid.arrays, valid.batch_size)
    except ModelError as exc:
        raise InferenceError(str(exc), 500) from None
    index = {t.name: (i, t.datatype) for i, t in enumerate(model.spec.outputs)}
    result: list[Output] = []
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
