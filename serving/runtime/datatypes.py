"""V2 tensor datatypes and their numpy and Triton-config equivalents (torch's: :mod:`.torch_types`).

BF16 has no numpy type: it travels as raw 16-bit words (numpy ``uint16``) and becomes
``torch.bfloat16`` by reinterpreting those bits, never by numeric conversion.

No torch import here: the model-preparing init container parses configs with this module, and
importing torch would add seconds of CPU to every pod start.
"""

from __future__ import annotations

import numpy as np

#: V2 datatype name -> numpy dtype used to hold it on the wire.
NUMPY_DTYPES: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(np.uint16),
}


#: Which numpy kinds a JSON tensor of each V2 family may arrive as (``b`` bool, ``i``/``u`` int, ``f`` float).
JSON_KINDS: dict[str, str] = {
    "BOOL": "b",
    "UINT8": "iu",
    "UINT16": "iu",
    "UINT32": "iu",
    "UINT64": "iu",
    "INT8": "iu",
    "INT16": "iu",
    "INT32": "iu",
    "INT64": "iu",
    "FP16": "iuf",
    "FP32": "iuf",
    "FP64": "iuf",
    "BF16": "iuf",
}


def element_size(datatype: str) -> int:
    """Bytes per element on the wire (binary extension and gRPC raw contents)."""
    return NUMPY_DTYPES[datatype].itemsize


def config_type_to_v2(name: str) -> str:
    """``TYPE_FP32`` (Triton model config) -> ``FP32`` (V2 protocol); ``TYPE_STRING`` -> ``BYTES``."""
    short = name.removeprefix("TYPE_")
    return "BYTES" if short == "STRING" else short
