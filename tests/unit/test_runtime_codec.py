"""V2 JSON / binary codec and the request-vs-model validation."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
import torch

from modelplane.serving.runtime.codec import check_shape, decode_request, encode_response
from modelplane.serving.runtime.config import parse_config
from modelplane.serving.runtime.errors import InferenceError
from modelplane.serving.runtime.http_app import route
from modelplane.serving.runtime.validation import shape_matches, validate
from modelplane.testing.runtime import mlp_config, two_input_config


def body(*inputs: dict[str, object], **extra: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def test_json_tensor_flat_and_nested_decode_to_the_same_array() -> None:
    flat = decode_request(
        body({"name": "a", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]}), None
    )
    nested = decode_request(
        body({"name": "a", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}), None
    )
    for request in (flat, nested):
        assert request.inputs[0].array.dtype == np.int32
        np.testing.assert_array_equal(request.inputs[0].array, [[1, 2], [3, 4]])


def test_binary_extension_decodes_inputs_in_order() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[1], [0]], dtype=np.bool_)
    header = body(
        {"name": "a", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": a.nbytes}},
        {"name": "b", "shape": [2, 1], "datatype": "BOOL", "parameters": {"binary_data_size": b.nbytes}},
        id="r1",
        outputs=[{"name": "o", "parameters": {"binary_data": True}}],
    )
    request = decode_request(header + a.tobytes() + b.tobytes(), len(header))
    assert request.id == "r1"
    np.testing.assert_array_equal(request.inputs[0].array, a)
    np.testing.assert_array_equal(request.inputs[1].array, b)
    assert request.outputs is not None
    assert [(o.name, o.binary) for o in request.outputs] == [("o", True)]


def test_extra_binary_bytes_are_refused() -> None:
    header = body({"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}})
    with pytest.raises(InferenceError, match="not claimed"):
        decode_request(header + bytes(8), len(header))


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"name": "a", "shape": [3], "datatype": "INT8", "data": [1, 2, 300]}, "out of range"),
        ({"name": "a", "shape": [1], "datatype": "UINT8", "data": [-1]}, "out of range"),
        ({"name": "a", "shape": [1], "datatype": "BOOL", "data": [1]}, "booleans"),
        ({"name": "a", "shape": [1], "datatype": "INT64", "data": [1.5]}, "integers"),
        ({"name": "a", "shape": [2], "datatype": "FP32", "data": [1, "2"]}, "numbers"),
        ({"name": "a", "shape": [True], "datatype": "FP32", "data": [1]}, "only integers"),
        ({"name": "a", "shape": "1", "datatype": "FP32", "data": [1]}, "list"),
        ({"name": "a", "shape": [1], "datatype": "FP32"}, "neither"),
        ({"shape": [1], "datatype": "FP32", "data": [1]}, "no 'name'"),
    ],
)
def test_malformed_tensors(tensor: dict[str, object], message: str) -> None:
    with pytest.raises(InferenceError, match=message) as info:
        decode_request(body(tensor), None)
    assert info.value.status == 400


def test_check_shape_bounds_the_element_count() -> None:
    assert check_shape("a", [2, 3]) == ((2, 3), 6)
    assert check_shape("a", []) == ((), 1)
    with pytest.raises(InferenceError, match="elements"):
        check_shape("a", [1 << 20, 1 << 20])


def test_bf16_json_round_trip() -> None:
    request = decode_request(body({"name": "a", "shape": [2], "datatype": "BF16", "data": [1.5, -2.0]}), None)
    words = request.inputs[0].array
    assert words.dtype == np.uint16
    as_float = torch.from_numpy(words.view(np.int16)).view(torch.bfloat16).float()
    assert as_float.tolist() == [1.5, -2.0]
    payload, length = encode_response("m", "1", "", [("o", "BF16", words, False)])
    assert length is None
    assert orjson.loads(payload)["outputs"][0]["data"] == [1.5, -2.0]


def test_encode_response_json_and_binary() -> None:
    a = np.arange(4, dtype=np.float32).reshape(2, 2)
    b = np.array([[7]], dtype=np.int64)
    payload, length = encode_response("m", "3", "id9", [("a", "FP32", a, False), ("b", "INT64", b, True)])
    assert length is not None
    doc = orjson.loads(payload[:length])
    assert doc["model_name"] == "m"
    assert doc["model_version"] == "3"
    assert doc["id"] == "id9"
    assert doc["outputs"][0] == {
        "name": "a",
        "datatype": "FP32",
        "shape": [2, 2],
        "data": [0.0, 1.0, 2.0, 3.0],
    }
    assert doc["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(payload[length:], dtype=np.int64).tolist() == [7]


def test_validation_orders_inputs_and_finds_the_batch_size() -> None:
    spec = parse_config(two_input_config("two"), "two")
    request = decode_request(
        body(
            {"name": "SCALE", "shape": [2, 1], "datatype": "INT64", "data": [1, 2]},
            {"name": "X", "shape": [2, 5], "datatype": "FP32", "data": [0.0] * 10},
        ),
        None,
    )
    valid = validate(spec, request)
    assert valid.batch_size == 2
    assert [a.shape for a in valid.arrays] == [(2, 5), (2, 1)]
    assert [(o.name, o.binary) for o in valid.outputs] == [("SUM", False), ("SCALED", False)]


def test_validation_without_batching_uses_dims_as_is() -> None:
    spec = parse_config(mlp_config("m", max_batch_size=0), "m")
    ok = decode_request(
        body({"name": "INPUT__0", "shape": [64], "datatype": "FP32", "data": [0.0] * 64}), None
    )
    assert validate(spec, ok).batch_size == 1
    batched = decode_request(
        body({"name": "INPUT__0", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}), None
    )
    with pytest.raises(InferenceError, match="does not match"):
        validate(spec, batched)


def test_shape_matches() -> None:
    assert shape_matches((-1, 64), (3, 64))
    assert not shape_matches((-1, 64), (3, 63))
    assert not shape_matches((-1, 64), (64,))
    assert shape_matches((-1, -1), (1, 0))


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v2", ("server_metadata", "", None)),
        ("GET", "/v2/health/live", ("live", "", None)),
        ("GET", "/v2/health/ready", ("ready", "", None)),
        ("GET", "/v2/models/m", ("model_metadata", "m", None)),
        ("GET", "/v2/models/m/versions/2", ("model_metadata", "m", "2")),
        ("GET", "/v2/models/m/ready", ("model_ready", "m", None)),
        ("GET", "/v2/models/m/versions/2/ready", ("model_ready", "m", "2")),
        ("GET", "/v2/models/m/config", ("model_config", "m", None)),
        ("POST", "/v2/models/m/infer", ("infer", "m", None)),
        ("POST", "/v2/models/m/versions/2/infer", ("infer", "m", "2")),
        ("POST", "/v2/repository/index", ("index", "", None)),
        ("POST", "/v2/repository/models/m/load", ("load", "m", None)),
        ("POST", "/v2/repository/models/m/unload", ("unload", "m", None)),
        ("GET", "/metrics", ("metrics", "", None)),
        ("GET", "/v2/models/stats", ("stats", "", None)),
        ("GET", "/v2/models/m/stats", ("stats", "m", None)),
        ("GET", "/v2/models/m/versions/2/stats", ("stats", "m", "2")),
        ("POST", "/v2/models/stats", ("", "", None)),
        ("GET", "/v2/models/m/infer", ("", "", None)),
        ("POST", "/v2/models/m/versions/infer", ("", "", None)),
        ("DELETE", "/v2/models/m", ("", "", None)),
        ("GET", "/v3/models/m", ("", "", None)),
    ],
)
def test_routes(method: str, path: str, expected: tuple[str, str, str | None]) -> None:
    assert route(method, path) == expected
