"""Comparing a shadow version's answer with the primary's, output by output.

Both answers are V2 inference responses, as JSON or with Triton's binary tensor extension; the
outputs are decoded to arrays and compared with a small tolerance (a retrained model that moves a
logit in the 6th decimal is not a mismatch; one that changes a class is).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

V2_DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip


def decode_outputs(body: bytes, headers: list[tuple[bytes, bytes]]) -> dict[str, np.ndarray[Any, Any]] | None:
    """Output name → array; None when the body is not a decodable V2 response."""
    header_length = next((int(v) for k, v in headers if k == b"inference-header-content-length"), None)
    json_part = body if header_length is None else body[:header_length]
    try:
        document = json.loads(json_part)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("outputs"), list):
        return None
    offset = 0 if header_length is None else header_length
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for output in document["outputs"]:
        name, datatype, shape = output.get("name"), output.get("datatype"), output.get("shape")
        dtype = V2_DTYPES.get(str(datatype))
        if not isinstance(name, str) or dtype is None or not isinstance(shape, list):
            return None
        size = (output.get("parameters") or {}).get("binary_data_size")
        values: np.ndarray[Any, Any]
        try:
            if size is not None:
                values = np.frombuffer(body[offset : offset + int(size)], dtype=dtype)
                offset += int(size)
            else:
                values = np.asarray(output.get("data"), dtype=dtype)
            arrays[name] = values.reshape(shape)
        except (ValueError, TypeError):
            return None
    return arrays


def outputs_match(
    primary: bytes,
    primary_headers: list[tuple[bytes, bytes]],
    shadow: bytes,
    shadow_headers: list[tuple[bytes, bytes]],
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> bool:
    """True when both answers carry the same outputs, equal within tolerance."""
    a = decode_outputs(primary, primary_headers)
    b = decode_outputs(shadow, shadow_headers)
    if a is None or b is None:
        return primary == shadow
    if a.keys() != b.keys():
        return False
    for name, left in a.items():
        right = b[name]
        if left.shape != right.shape:
            return False
        if left.dtype.kind in "fc" or right.dtype.kind in "fc":
            if not np.allclose(
                left.astype(np.float64), right.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True
            ):
                return False
        elif not np.array_equal(left, right):
            return False
    return True
