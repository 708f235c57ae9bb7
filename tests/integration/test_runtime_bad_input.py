"""Bad input gets the right V2 error and the server keeps serving: each case is followed by a valid request.

Driven with raw httpx (and the gRPC stub) so the bodies can be as broken as a real client's bugs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelplane.testing.runtime import RuntimeProcess
from modelplane.testing.runtime_fixtures import TEST_MAX_BODY_BYTES

VALID_ROW = [0.5] * 64


def mlp_request(
    shape: list[int] | None = None, data: Any = None, datatype: str = "FP32", **extra: Any
) -> bytes:
    tensor = {
        "name": "INPUT__0",
        "shape": shape or [1, 64],
        "datatype": datatype,
        "data": VALID_ROW if data is None else data,
    }
    return json.dumps({"inputs": [tensor], **extra}).encode()


def two_request(inputs: list[dict[str, Any]]) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


X = {"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
SCALE = {"name": "SCALE", "shape": [1, 1], "datatype": "INT64", "data": [2]}

# (id, path, body, extra headers, status, text the error must contain)
CASES: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
    ("shape-16-with-18-values", "mlp", mlp_request([1, 16], [1.0] * 18), {}, 400, "needs 16 values"),
    ("shape-not-the-models", "mlp", mlp_request([1, 32], [1.0] * 32), {}, 400, "does not match"),
    ("negative-dim", "mlp", mlp_request([-1, 64]), {}, 400, "negative"),
    ("absurd-shape", "mlp", mlp_request([1, 10**12]), {}, 400, "elements"),
    ("batch-over-max", "mlp", mlp_request([65, 1], [0.0] * 65), {}, 400, "does not match"),
    ("zero-batch", "mlp", mlp_request([0, 64], []), {}, 400, "batch size 0"),
    ("wrong-datatype", "mlp", mlp_request(datatype="FP64"), {}, 400, "does not match the model's FP32"),
    ("unknown-datatype", "mlp", mlp_request(datatype="FLOAT32"), {}, 400, "not supported"),
    ("bytes-datatype", "mlp", mlp_request(datatype="BYTES", data=["a"] * 64), {}, 400, "not supported"),
    ("missing-input", "two", two_request([X]), {}, 400, "needs input 'SCALE'"),
    ("extra-input", "two", two_request([X, SCALE, {**SCALE, "name": "EXTRA"}]), {}, 400, "no input 'EXTRA'"),
    ("duplicate-input", "two", two_request([X, X, SCALE]), {}, 400, "more than once"),
    (
        "batch-disagrees",
        "two",
        two_request([X, {**SCALE, "shape": [2, 1], "data": [1, 2]}]),
        {},
        400,
        "batch",
    ),
    ("float-for-int64", "two", two_request([X, {**SCALE, "data": [2.5]}]), {}, 400, "integers"),
    ("non-numeric-json", "mlp", mlp_request(data=["x"] * 64), {}, 400, "must be numbers"),
    ("null-in-data", "mlp", mlp_request(data=[None] * 64), {}, 400, "must be numbers"),
    ("ragged-data", "mlp", mlp_request([2, 64], [[0.0] * 64, [0.0] * 63]), {}, 400, ""),
    ("nan-literal", "mlp", mlp_request().replace(b"0.5", b"NaN", 1), {}, 400, "not valid JSON"),
    ("huge-string", "mlp", mlp_request(data=["9" * 30000] + [0.0] * 63), {}, 400, "must be numbers"),
    ("not-json", "mlp", b"this is not json", {}, 400, "not valid JSON"),
    ("json-array-body", "mlp", b"[1, 2, 3]", {}, 400, "JSON object"),
    ("no-inputs", "mlp", b'{"inputs": []}', {}, 400, "non-empty 'inputs'"),
    ("deeply-nested", "mlp", b'{"inputs": ' + b"[" * 20000 + b"]" * 20000 + b"}", {}, 400, "not valid JSON"),
    ("unknown-output", "mlp", mlp_request(outputs=[{"name": "NOPE"}]), {}, 400, "no output 'NOPE'"),
    (
        "truncated-binary",
        "mlp",
        b'{"inputs":[{"name":"INPUT__0","shape":[1,64],"datatype":"FP32","parameters":{"binary_data_size":256}}]}'
        + bytes(100),
        {"Inference-Header-Content-Length": "105"},
        400,
        "truncated",
    ),
    (
        "binary-size-wrong-for-shape",
        "mlp",
        b'{"inputs":[{"name":"INPUT__0","shape":[1,64],"datatype":"FP32","parameters":{"binary_data_size":100}}]}'
        + bytes(100),
        {"Inference-Header-Content-Length": "105"},
        400,
        "needs 256 bytes",
    ),
    (
        "header-length-past-body",
        "mlp",
        mlp_request(),
        {"Inference-Header-Content-Length": "999999"},
        400,
        "only",
    ),
    ("unknown-model", "nope", mlp_request(), {}, 404, "unknown model"),
    ("unknown-version", "mlp/versions/7", mlp_request(), {}, 404, "unknown version"),
    ("unsupported-encoding", "mlp", mlp_request(), {"Content-Encoding": "br"}, 400, "not supported"),
]


@pytest.fixture(scope="module")
def client(runtime_server: RuntimeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=runtime_server.http_url, timeout=30) as c:
        yield c


def assert_valid_request_succeeds(client: httpx.Client) -> None:
    response = client.post("/v2/models/mlp/infer", content=mlp_request())
    assert response.status_code == 200, response.text
    assert len(response.json()["outputs"][0]["data"]) == 10


def _fix_header_length(body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """The binary cases name their JSON header length; compute it from the body instead of by hand."""
    if headers.get("Inference-Header-Content-Length") == "105":
        return {**headers, "Inference-Header-Content-Length": str(body.index(b"}]}") + 3)}
    return headers


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_request_is_refused_and_server_keeps_serving(
    client: httpx.Client, path: str, body: bytes, headers: dict[str, str], status: int, text: str
) -> None:
    response = client.post(
        f"/v2/models/{path}/infer", content=body, headers=_fix_header_length(body, headers)
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert isinstance(error, str)
    assert text in error
    assert_valid_request_succeeds(client)


def padded(size: int) -> bytes:
    """A valid MLP request padded with JSON whitespace to exactly ``size`` bytes."""
    body = mlp_request()
    return body + b" " * (size - len(body))


@pytest.mark.parametrize(
    ("size", "status"),
    [(TEST_MAX_BODY_BYTES - 1, 200), (TEST_MAX_BODY_BYTES, 200), (TEST_MAX_BODY_BYTES + 1, 413)],
)
def test_body_limit_exact(client: httpx.Client, size: int, status: int) -> None:
    body = padded(size)
    assert len(body) == size
    response = client.post("/v2/models/mlp/infer", content=body)
    assert response.status_code == status, response.text
    if status == 413:
        assert "--max-body-bytes" in response.json()["error"]
    assert_valid_request_succeeds(client)


def test_body_limit_applies_to_chunked_bodies(client: httpx.Client) -> None:
    body = padded(TEST_MAX_BODY_BYTES + 1)
    response = client.post("/v2/models/mlp/infer", content=iter([body[:1000], body[1000:]]))
    assert response.status_code == 413
    assert_valid_request_succeeds(client)


def test_unknown_routes_and_model_ready(client: httpx.Client) -> None:
    assert client.get("/v2/nothing/here").status_code == 404
    assert client.get("/v2/models/nope/ready").status_code == 404
    assert client.get("/v2/models/nope").json()["error"] == "unknown model 'nope'"
    assert client.post("/v2/repository/models/..%2F..%2Fetc/load").status_code == 404
    assert_valid_request_succeeds(client)


@pytest.fixture(scope="module")
def stub(runtime_server: RuntimeProcess) -> Any:
    channel = grpc.insecure_channel(runtime_server.grpc_address)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def grpc_request(
    model: str = "mlp", shape: tuple[int, ...] = (1, 64), raw: bytes | None = None, datatype: str = "FP32"
) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="INPUT__0", datatype=datatype, shape=list(shape))
    request.raw_input_contents.append(np.zeros(shape, dtype=np.float32).tobytes() if raw is None else raw)
    return request


GRPC_CASES = [
    ("wrong-shape", grpc_request(shape=(1, 16)), grpc.StatusCode.INVALID_ARGUMENT),
    ("truncated-raw", grpc_request(raw=bytes(100)), grpc.StatusCode.INVALID_ARGUMENT),
    ("wrong-datatype", grpc_request(datatype="INT32"), grpc.StatusCode.INVALID_ARGUMENT),
    ("unknown-model", grpc_request(model="nope"), grpc.StatusCode.NOT_FOUND),
    (
        "message-over-the-limit",
        grpc_request(shape=(1, TEST_MAX_BODY_BYTES // 4 + 1), raw=bytes(TEST_MAX_BODY_BYTES + 4)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
]


@pytest.mark.parametrize(("request_", "code"), [c[1:] for c in GRPC_CASES], ids=[c[0] for c in GRPC_CASES])
def test_grpc_bad_request_is_refused_and_server_keeps_serving(
    stub: Any, request_: Any, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request_, timeout=30)
    assert info.value.code() == code
    assert info.value.details()
    response = stub.ModelInfer(grpc_request(), timeout=30)
    assert list(response.outputs[0].shape) == [1, 10]
    assert len(response.raw_output_contents[0]) == 40
