"""What the router answers itself: shared memory, repository control, statistics of every model.

The decisions are pure functions of a path or a request; the cheap check every inference pays
(:func:`may_name_shared_memory`) must say "maybe" whenever the full check would refuse.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest
from tritonclient.grpc import service_pb2

from modelplane.serving.router.extensions import (
    REPOSITORY_CONTROL_REFUSED,
    SHARED_MEMORY_REFUSED,
    grpc_shared_memory_refusal,
    infer_shared_memory_refusal,
    local_refusal,
)
from modelplane.serving.router.http_server import Request
from modelplane.serving.router.proxy import may_name_shared_memory

LIMIT = 1 << 20


@pytest.mark.parametrize(
    "path",
    [
        "/v2/systemsharedmemory/status",
        "/v2/systemsharedmemory/region/r/status",
        "/v2/systemsharedmemory/region/r/register",
        "/v2/systemsharedmemory/region/r/unregister",
        "/v2/systemsharedmemory/unregister",
        "/v2/cudasharedmemory/status",
        "/v2/cudasharedmemory/region/g/register",
        "/ns/team-a/v2/cudasharedmemory/unregister",
    ],
)
def test_shared_memory_management_is_answered_by_the_router(path: str) -> None:
    assert local_refusal(path) == SHARED_MEMORY_REFUSED


@pytest.mark.parametrize(
    ("path", "action"),
    [
        ("/v2/repository/models/iris/load", "load"),
        ("/v2/repository/models/iris/unload", "unload"),
        ("/ns/team-a/v2/repository/models/iris/load", "load"),
    ],
)
def test_repository_control_is_refused_saying_who_owns_the_models(path: str, action: str) -> None:
    refusal = local_refusal(path)
    assert refusal == REPOSITORY_CONTROL_REFUSED.format(action=action)
    assert "ModelDeployment" in refusal


@pytest.mark.parametrize(
    "path",
    [
        "/v2",
        "/v2/models/iris/infer",
        "/v2/repository/index",
        "/v2/repository/models/iris",
        "/v1/models",
        "/v2/trace/setting",
    ],
)
def test_other_paths_are_not_refused_here(path: str) -> None:
    assert local_refusal(path) is None


def json_body(
    parameters: dict[str, Any] | None = None, output_parameters: dict[str, Any] | None = None
) -> bytes:
    doc: dict[str, Any] = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    if parameters is not None:
        doc["inputs"][0]["parameters"] = parameters
    if output_parameters is not None:
        doc["outputs"] = [{"name": "y", "parameters": output_parameters}]
    return json.dumps(doc).encode()


REGION = {"shared_memory_region": "r", "shared_memory_byte_size": 8}


def binary(header: bytes, tensors: bytes = b"\0" * 8) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    return header + tensors, [(b"inference-header-content-length", str(len(header)).encode())]


CASES: list[tuple[str, bytes, list[tuple[bytes, bytes]], str | None]] = [
    ("plain JSON", json_body(), [], None),
    ("JSON, input region", json_body(REGION), [], "input 'x' names a shared-memory region"),
    ("JSON, output region", json_body(None, REGION), [], "output 'y' names a shared-memory region"),
    ("JSON, other parameters", json_body({"binary_data_size": 8}), [], None),
    ("binary, region in the header", *binary(json_body(REGION)), "input 'x'"),
    ("binary, key only in the tensor bytes", *binary(json_body(), b"shared_memory_region"), None),
    (
        "key as tensor data",
        json.dumps({"inputs": [{"name": "s", "data": ["shared_memory_region"]}]}).encode(),
        [],
        None,
    ),
    ("key with escapes", json_body(REGION).replace(b"shared", b"\\u0073hared"), [], "input 'x'"),
    ("gzip", gzip.compress(json_body(REGION)), [(b"content-encoding", b"gzip")], "input 'x'"),
    ("deflate", zlib.compress(json_body(None, REGION)), [(b"content-encoding", b"deflate")], "output 'y'"),
    (
        "deflate, binary",
        zlib.compress(binary(json_body(REGION))[0]),
        [(b"content-encoding", b"deflate"), *binary(json_body(REGION))[1]],
        "input 'x'",
    ),
    ("gzip, no region", gzip.compress(json_body()), [(b"content-encoding", b"gzip")], None),
    ("not JSON", b"{nope shared_memory_region", [], None),
    ("corrupt gzip", b"shared_memory_region", [(b"content-encoding", b"gzip")], None),
    ("unknown encoding", json_body(REGION), [(b"content-encoding", b"br")], None),
    ("bad header length", json_body(REGION), [(b"inference-header-content-length", b"x")], None),
    ("not an object", b'["shared_memory_region"]', [], None),
]


@pytest.mark.parametrize(("body", "headers", "refusal"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_inference_naming_a_region_is_refused_and_the_cheap_check_never_misses_one(
    body: bytes, headers: list[tuple[bytes, bytes]], refusal: str | None
) -> None:
    found = infer_shared_memory_refusal(body, headers, LIMIT)
    if refusal is None:
        assert found is None
    else:
        assert found is not None
        assert refusal in found
        assert SHARED_MEMORY_REFUSED in found
        assert may_name_shared_memory(Request("POST", "/v2/models/m/infer", b"", headers, body))


def cheap(body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> bool:
    return may_name_shared_memory(Request("POST", "/v2/models/m/infer", b"", headers or [], body))


def test_the_cheap_check_passes_ordinary_requests_without_a_parse() -> None:
    image = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "data": [1.5, -2e-05]}]}).encode()
    assert not cheap(json_body())
    assert not cheap(image)  # a "g" elsewhere than in the key
    assert not cheap(*binary(json_body({"binary_data_size": 8}), b"shared_memory_region\\g"))
    assert not cheap(json_body(), [(b"content-encoding", b"identity")])


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"", []),
        (b' {"inputs": []}', []),  # not JSON's first byte: looked at closely
        (b'{"inputs": [{"name": "a\\"b"}]}', []),
        (json_body(REGION), [(b"inference-header-content-length", b"-1")]),
    ],
)
def test_the_cheap_check_sends_anything_unusual_to_the_full_check(
    body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    assert cheap(body, headers)


def test_grpc_inference_naming_a_region_is_refused() -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[1])
    request.outputs.add(name="y")
    assert grpc_shared_memory_refusal(request.inputs, request.outputs) is None
    request.outputs[0].parameters["shared_memory_region"].string_param = "r"
    refusal = grpc_shared_memory_refusal(request.inputs, request.outputs)
    assert refusal is not None
    assert refusal.startswith("output 'y' names a shared-memory region")
    request.inputs[0].parameters["shared_memory_region"].string_param = "r"
    assert str(grpc_shared_memory_refusal(request.inputs, request.outputs)).startswith("input 'x'")
