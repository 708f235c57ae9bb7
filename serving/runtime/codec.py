"""V2 inference requests and responses over HTTP: JSON tensors and the binary tensor data extension.

Decoding turns a body into named numpy arrays and checks everything that does not need the model's
config (JSON well-formed, shapes non-negative and bounded, data count matching the shape, binary
chunk sizes adding up). :mod:`validation` then checks the tensors against the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch

from modelplane.serving.runtime.datatypes import JSON_KINDS, NUMPY_DTYPES
from modelplane.serving.runtime.errors import bad_request
from modelplane.serving.runtime.shared_memory import SharedMemoryRegistry, TensorPlace, tensor_place

#: Upper bound on the elements of one tensor, whatever its body size (guards absurd shapes).
MAX_ELEMENTS = 1 << 31
SUPPORTED = ", ".join(NUMPY_DTYPES)


@dataclass(slots=True)
class Tensor:
    """A decoded tensor: V2 datatype, shape and the data already in that shape."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray[Any, Any]


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool
    #: Where to write it when the request puts it in shared memory (then the answer carries no data).
    place: TensorPlace | None = None


@dataclass(slots=True)
class InferRequest:
    """A decoded V2 inference request, protocol-neutral (gRPC decodes into the same type)."""

    id: str
    inputs: list[Tensor]
    #: ``None``: return every output of the model.
    outputs: list[RequestedOutput] | None
    #: Default for outputs not listed (``parameters.binary_data_output``).
    binary_output: bool = False

    def shared_outputs(self) -> frozenset[str]:
        """Names of the outputs the request has written to shared memory (answered without data)."""
        return frozenset(o.name for o in self.outputs or () if o.place is not None)


def check_shape(name: str, shape: Any) -> tuple[tuple[int, ...], int]:
    """Validate a wire shape; returns it as a tuple and its element count."""
    if not isinstance(shape, list | tuple):
        raise bad_request(f"input {name!r}: 'shape' must be a list of non-negative integers")
    dims: list[int] = []
    for dim in shape:
        if type(dim) is not int:
            raise bad_request(f"input {name!r}: shape {shape!r} must contain only integers")
        if dim < 0:
            raise bad_request(f"input {name!r}: shape {list(shape)} has a negative dimension")
        dims.append(dim)
    count = math.prod(dims)
    if count > MAX_ELEMENTS:
        raise bad_request(f"input {name!r}: shape {dims} has {count} elements, more than {MAX_ELEMENTS}")
    return tuple(dims), count


def array_from_bytes(
    name: str, datatype: str, shape: tuple[int, ...], count: int, raw: bytes | memoryview
) -> np.ndarray[Any, Any]:
    """Raw little-endian bytes (binary extension, gRPC raw contents) -> array of ``shape``."""
    dtype = NUMPY_DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise bad_request(
            f"input {name!r}: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes, "
            f"got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def array_from_json(
    name: str, datatype: str, shape: tuple[int, ...], count: int, data: Any
) -> np.ndarray[Any, Any]:
    """JSON ``data`` (flat or nested list of numbers) -> array of ``shape`` and ``datatype``."""
    if not isinstance(data, list):
        data = [data]
    try:
        array = np.array(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise bad_request(f"input {name!r}: 'data' is not a regular array of numbers ({exc})") from None
    if array.size != count:
        raise bad_request(
            f"input {name!r}: shape {list(shape)} needs {count} values, 'data' has {array.size}"
        )
    if count and array.dtype.kind not in JSON_KINDS[datatype]:
        wanted = {"b": "booleans", "iu": "integers", "iuf": "numbers"}[JSON_KINDS[datatype]]
        raise bad_request(
            f"input {name!r}: {datatype} data must be {wanted}, got values of type {array.dtype}"
        )
    if datatype == "BF16":
        as_bf16 = torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
        return as_bf16.view(torch.int16).numpy().view(np.uint16).reshape(shape)
    dtype = NUMPY_DTYPES[datatype]
    if count and dtype.kind in "iu":
        info = np.iinfo(dtype)  # type: ignore[type-var]
        if array.min() < info.min or array.max() > info.max:
            raise bad_request(f"input {name!r}: a value is out of range for {datatype}")
    return array.astype(dtype, copy=False).reshape(shape)


def shared_input(
    shared_memory: SharedMemoryRegistry | None,
    name: str,
    place: TensorPlace,
    datatype: str,
    shape: tuple[int, ...],
) -> np.ndarray[Any, Any]:
    """An input read in place from a registered shared memory region (both front ends)."""
    if shared_memory is None:
        raise bad_request(f"input {name!r}: shared memory is not served here")
    return shared_memory.read(f"input {name!r}", place, datatype, shape)


def shared_output(
    shared_memory: SharedMemoryRegistry | None, name: str, binary: bool, params: dict[str, Any]
) -> RequestedOutput:
    """A requested output, with its shared memory place checked against the registry if it has one."""
    place = tensor_place(f"output {name!r}", params)
    if place is not None:
        if shared_memory is None:
            raise bad_request(f"output {name!r}: shared memory is not served here")
        shared_memory.check(f"output {name!r}", place)
    return RequestedOutput(name, binary, place)


def decode_request(
    body: bytes, header_length: int | None, shared_memory: SharedMemoryRegistry | None = None
) -> InferRequest:
    """Decode an HTTP infer body; ``header_length`` is ``Inference-Header-Content-Length`` if sent.

    Inputs and outputs placed in shared memory are looked up in ``shared_memory``.
    """
    if header_length is None:
        json_part, binary = body, b""
    else:
        if header_length < 0 or header_length > len(body):
            raise bad_request(
                f"Inference-Header-Content-Length is {header_length} but the body has only {len(body)} bytes"
            )
        json_part, binary = body[:header_length], body[header_length:]
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise bad_request("request body must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad_request("request must have a non-empty 'inputs' list")
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise bad_request("'id' must be a string")

    offset = 0
    inputs: list[Tensor] = []
    view = memoryview(binary)
    for raw in raw_inputs:
        if not isinstance(raw, dict):
            raise bad_request("each entry of 'inputs' must be an object with name, shape, datatype and data")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request("an input has no 'name'")
        datatype = raw.get("datatype")
        if datatype not in NUMPY_DTYPES:
            raise bad_request(
                f"input {name!r}: datatype {datatype!r} is not supported; use one of {SUPPORTED}"
            )
        shape, count = check_shape(name, raw.get("shape"))
        params = raw.get("parameters") or {}
        if not isinstance(params, dict):
            raise bad_request(f"input {name!r}: 'parameters' must be an object")
        size = params.get("binary_data_size")
        place = tensor_place(f"input {name!r}", params)
        if place is not None:
            if size is not None or "data" in raw:
                raise bad_request(
                    f"input {name!r}: its data is in shared memory; it must not have 'data' or "
                    "binary_data_size as well"
                )
            array = shared_input(shared_memory, name, place, datatype, shape)
        elif size is not None:
            if type(size) is not int or size < 0:
                raise bad_request(f"input {name!r}: binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise bad_request(
                    f"input {name!r}: binary data truncated: expected {size} bytes at offset {offset}, "
                    f"the body has {len(binary) - offset} left"
                )
            array = array_from_bytes(name, datatype, shape, count, view[offset : offset + size])
            offset += size
        elif "data" in raw:
            array = array_from_json(name, datatype, shape, count, raw["data"])
        else:
            raise bad_request(f"input {name!r}: has neither 'data' nor parameters.binary_data_size")
        inputs.append(Tensor(name, datatype, shape, array))
    if offset != len(binary):
        raise bad_request(
            f"the body has {len(binary) - offset} bytes of binary data not claimed by any binary_data_size"
        )

    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise bad_request("'parameters' must be an object")
    binary_output = bool(params.get("binary_data_output", False))
    outputs: list[RequestedOutput] | None = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise bad_request("'outputs' must be a list")
        outputs = []
        for raw in raw_outputs:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise bad_request("each entry of 'outputs' must be an object with a 'name'")
            oparams = raw.get("parameters") or {}
            if not isinstance(oparams, dict):
                raise bad_request(f"output {raw['name']!r}: 'parameters' must be an object")
            wants_binary = bool(oparams.get("binary_data", binary_output))
            outputs.append(shared_output(shared_memory, raw["name"], wants_binary, oparams))
    return InferRequest(request_id, inputs, outputs, binary_output)


def json_safe(datatype: str, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """An array orjson can write as JSON numbers (BF16 words become float32 values)."""
    if datatype == "BF16":
        words = torch.from_numpy(np.ascontiguousarray(array).view(np.int16))
        return words.view(torch.bfloat16).float().numpy()
    return np.ascontiguousarray(array)


def encode_response(
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: list[tuple[str, str, np.ndarray[Any, Any], bool]],
    shared: frozenset[str] = frozenset(),
) -> tuple[bytes, int | None]:
    """Encode outputs ``(name, datatype, array, binary)``; returns the body and the JSON header length.

    The header length is ``None`` when no output is binary, so the body is plain JSON. Outputs named
    in ``shared`` were written to shared memory: their entries carry no data, as the protocol says.
    """
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, datatype, array, binary in outputs:
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if name in shared:  # already in its shared memory region
            pass
        elif binary:
            raw = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = json_safe(datatype, array).reshape(-1)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": entries}
    if request_id:
        doc["id"] = request_id
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
