"""System shared memory: the pure bounds checks, the region registry over real POSIX shared memory,
and the codec reading inputs from and placing outputs in registered regions."""

from __future__ import annotations

import json
import mmap
import uuid
from collections.abc import Iterator
from multiprocessing import shared_memory as mpshm

import numpy as np
import pytest

from modelplane.serving.runtime.codec import decode_request, encode_response
from modelplane.serving.runtime.errors import InferenceError
from modelplane.serving.runtime.http_app import route
from modelplane.serving.runtime.shared_memory import (
    RegionStatus,
    SharedMemoryRegistry,
    TensorPlace,
    check_input_size,
    check_object_size,
    check_output_size,
    check_range,
    check_register,
    shm_file_name,
    tensor_place,
)

SIZE = 2 * mmap.ALLOCATIONGRANULARITY


@pytest.fixture
def segment() -> Iterator[mpshm.SharedMemory]:
    """A real POSIX shared memory object, as a client creates it (``/dev/shm/NAME``)."""
    shm = mpshm.SharedMemory(f"mp_test_{uuid.uuid4().hex[:12]}", create=True, size=SIZE)
    try:
        yield shm
    finally:
        shm.close()
        shm.unlink()


@pytest.fixture
def registry() -> Iterator[SharedMemoryRegistry]:
    reg = SharedMemoryRegistry()
    try:
        yield reg
    finally:
        reg.close()


def buf(shm: mpshm.SharedMemory) -> memoryview:
    assert shm.buf is not None
    return shm.buf


def key_of(shm: mpshm.SharedMemory) -> str:
    return "/" + shm.name.lstrip("/")


# --- pure checks -------------------------------------------------------------------------------


def test_tensor_place_reads_the_protocols_parameters() -> None:
    assert tensor_place("input 'x'", {}) is None
    assert tensor_place("input 'x'", {"binary_data_size": 4}) is None
    params = {"shared_memory_region": "r", "shared_memory_byte_size": 16}
    assert tensor_place("input 'x'", params) == TensorPlace("r", 0, 16)
    params["shared_memory_offset"] = 8
    assert tensor_place("input 'x'", params) == TensorPlace("r", 8, 16)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"shared_memory_region": "r"}, "needs shared_memory_byte_size"),
        ({"shared_memory_byte_size": 4}, "need shared_memory_region"),
        ({"shared_memory_offset": 4}, "need shared_memory_region"),
        ({"shared_memory_region": "", "shared_memory_byte_size": 4}, "non-empty string"),
        ({"shared_memory_region": 3, "shared_memory_byte_size": 4}, "non-empty string"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": -1}, "non-negative integer"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": "4"}, "non-negative integer"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": True}, "non-negative integer"),
        (
            {"shared_memory_region": "r", "shared_memory_byte_size": 4, "shared_memory_offset": -8},
            "shared_memory_offset must be a non-negative integer",
        ),
    ],
)
def test_tensor_place_refuses_incomplete_or_mistyped_parameters(
    params: dict[str, object], message: str
) -> None:
    with pytest.raises(InferenceError, match=message) as caught:
        tensor_place("input 'x'", params)
    assert caught.value.status == 400
    assert "input 'x'" in caught.value.message


@pytest.mark.parametrize(
    ("offset", "byte_size", "fits"),
    [
        (0, 100, True),
        (0, 101, False),  # one byte past the end
        (99, 1, True),
        (99, 2, False),
        (100, 0, True),  # an empty tensor at the very end
        (101, 0, False),
        (2**62, 2**62, False),  # sums that would overflow a C int64 are refused too
    ],
)
def test_check_range_at_exactly_the_limit(offset: int, byte_size: int, fits: bool) -> None:
    if fits:
        check_range("input 'x'", "r", 100, offset, byte_size)
    else:
        with pytest.raises(InferenceError, match="do not fit in shared memory region 'r' of 100 bytes"):
            check_range("input 'x'", "r", 100, offset, byte_size)


def test_input_size_must_match_shape_and_datatype_exactly() -> None:
    check_input_size("input 'x'", "FP32", (2, 3), 24)
    check_input_size("input 'x'", "BF16", (4,), 8)
    for wrong in (23, 25, 0):
        with pytest.raises(InferenceError, match=r"shape \[2, 3\] of FP32 needs 24 bytes"):
            check_input_size("input 'x'", "FP32", (2, 3), wrong)


def test_output_size_must_hold_the_result() -> None:
    check_output_size("output 'y'", 40, 40)
    check_output_size("output 'y'", 40, 4096)  # a client may reserve more, as in Triton
    with pytest.raises(InferenceError, match="takes 40 bytes, more than its shared_memory_byte_size of 39"):
        check_output_size("output 'y'", 40, 39)


@pytest.mark.parametrize("key", ["/a", "a", "//a", "/input_data-1.x"])
def test_shm_file_name_accepts_posix_names(key: str) -> None:
    assert shm_file_name(key) == key.lstrip("/")


@pytest.mark.parametrize("key", ["", "/", "/..", "..", "/.", "/a/b", "/../etc/passwd", "a\0b", 7, None])
def test_shm_file_name_refuses_anything_that_names_another_file(key: object) -> None:
    with pytest.raises(InferenceError, match="shared memory key"):
        shm_file_name(key)


def test_check_register_and_object_size() -> None:
    status, file_name = check_register("r", "/k", 4096, 100)
    assert (status, file_name) == (RegionStatus("r", "/k", 4096, 100), "k")
    check_object_size(status, 4196)
    with pytest.raises(InferenceError, match="do not fit in shared memory key '/k' of 4195 bytes"):
        check_object_size(status, 4195)
    for args, message in [
        (("", "/k", 0, 1), "non-empty name"),
        (("r", "/k", 0, 0), "byte_size must be positive"),
        (("r", "/k", -1, 1), "offset must be a non-negative integer"),
        (("r", "/k", 0, None), "byte_size must be a non-negative integer"),
        (("r", "/k", 0, 1.5), "byte_size must be a non-negative integer"),
    ]:
        with pytest.raises(InferenceError, match=message):
            check_register(*args)


def test_routes_of_the_extension() -> None:
    shm = "/v2/systemsharedmemory"
    assert route("GET", f"{shm}/status") == ("shm_status", "", None)
    assert route("GET", f"{shm}/region/in0/status") == ("shm_status", "in0", None)
    assert route("POST", f"{shm}/region/in0/register") == ("shm_register", "in0", None)
    assert route("POST", f"{shm}/unregister") == ("shm_unregister", "", None)
    assert route("POST", f"{shm}/region/in0/unregister") == ("shm_unregister", "in0", None)
    assert route("POST", "/v2/cudasharedmemory/region/c/register") == ("cuda_shm", "c", None)
    assert route("GET", "/v2/cudasharedmemory/status") == ("cuda_shm", "", None)
    for method, path in [
        ("POST", f"{shm}/register"),  # register needs a name
        ("GET", f"{shm}/region/in0/register"),
        ("POST", f"{shm}/status"),
        ("GET", f"{shm}/region/in0"),
        ("GET", f"{shm}/region//status"),
        ("POST", f"{shm}/region/in0/delete"),
    ]:
        assert route(method, path) == ("", "", None), path


# --- the registry over real shared memory ------------------------------------------------------


def test_register_read_write_status_unregister(
    registry: SharedMemoryRegistry, segment: mpshm.SharedMemory
) -> None:
    key = key_of(segment)
    status = registry.register("in0", key, 0, SIZE)
    assert registry.status() == [status] == [RegionStatus("in0", key, 0, SIZE)]
    assert registry.status("in0") == [status]
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.ndarray(data.shape, data.dtype, buffer=buf(segment)[64:])[:] = data
    view = registry.read("input 'x'", TensorPlace("in0", 64, 24), "FP32", (2, 3))
    np.testing.assert_array_equal(view, data)
    assert view.flags.writeable  # handed to torch without a copy
    data[0, 0] = 42.0
    np.ndarray(data.shape, data.dtype, buffer=buf(segment)[64:])[:] = data
    assert view[0, 0] == 42.0  # a view, not a copy
    out = np.array([[7, 8], [9, 10]], dtype=np.int64)[:, ::-1]  # not contiguous: written packed
    registry.write("output 'y'", TensorPlace("in0", 256, 64), out)
    got = np.ndarray((2, 2), np.int64, buffer=buf(segment)[256:])
    np.testing.assert_array_equal(got, [[8, 7], [10, 9]])
    del view, got
    registry.unregister("in0")
    assert registry.status() == []
    with pytest.raises(InferenceError, match="unknown shared memory region 'in0'"):
        registry.read("input 'x'", TensorPlace("in0", 0, 4), "FP32", (1,))
    registry.unregister("in0")  # unknown names are no error, as in Triton


def test_a_region_at_an_offset_in_its_object(
    registry: SharedMemoryRegistry, segment: mpshm.SharedMemory
) -> None:
    # Offsets that are not page-aligned map from the page below and keep the difference.
    offset = mmap.ALLOCATIONGRANULARITY + 12
    np.ndarray((4,), np.float32, buffer=buf(segment)[offset:])[:] = [1, 2, 3, 4]
    registry.register("r", key_of(segment), offset, 16)
    np.testing.assert_array_equal(
        registry.read("input 'x'", TensorPlace("r", 0, 16), "FP32", (4,)), [1, 2, 3, 4]
    )
    np.testing.assert_array_equal(registry.read("input 'x'", TensorPlace("r", 8, 8), "FP32", (2,)), [3, 4])
    with pytest.raises(InferenceError, match="do not fit in shared memory region 'r' of 16 bytes"):
        registry.read("input 'x'", TensorPlace("r", 8, 12), "FP32", (3,))


def test_bad_registrations_are_refused_and_change_nothing(
    registry: SharedMemoryRegistry, segment: mpshm.SharedMemory
) -> None:
    key = key_of(segment)
    registry.register("r", key, 0, 64)
    before = registry.status()
    cases = [
        (("r", key, 0, 64), "already registered"),
        (("s", "/mp_no_such_key_" + uuid.uuid4().hex, 0, 64), "cannot open shared memory key"),
        (("s", key, 0, SIZE + 1), f"do not fit in shared memory key '{key}' of {SIZE} bytes"),
        (("s", key, SIZE, 1), "do not fit"),
        (("s", key, 0, 0), "byte_size must be positive"),
        (("s", "/../../etc/passwd", 0, 1), "not a valid POSIX shared memory name"),
    ]
    for args, message in cases:
        with pytest.raises(InferenceError, match=message) as caught:
            registry.register(*args)
        assert caught.value.status == 400
        assert registry.status() == before
    np.testing.assert_array_equal(registry.read("i", TensorPlace("r", 0, 4), "INT32", (1,)), [0])


def test_reads_and_writes_outside_the_region_are_refused(
    registry: SharedMemoryRegistry, segment: mpshm.SharedMemory
) -> None:
    registry.register("r", key_of(segment), 0, 64)
    buf(segment)[:64] = bytes(range(64))
    for place, shape in [
        (TensorPlace("r", 0, 68), (17,)),  # byte size past the end
        (TensorPlace("r", 64, 4), (1,)),  # offset at the end
        (TensorPlace("r", 2**40, 4), (1,)),  # offset far outside
    ]:
        with pytest.raises(InferenceError, match="do not fit"):
            registry.read("input 'x'", place, "FP32", shape)
        with pytest.raises(InferenceError, match="do not fit"):
            registry.write("output 'y'", place, np.zeros(shape, np.float32))
    with pytest.raises(InferenceError, match="needs 8 bytes"):
        registry.read("input 'x'", TensorPlace("r", 0, 4), "FP32", (2,))
    with pytest.raises(InferenceError, match="takes 8 bytes, more than"):
        registry.write("output 'y'", TensorPlace("r", 0, 4), np.zeros(2, np.float32))
    assert bytes(buf(segment)[:64]) == bytes(range(64))  # nothing was written


def test_a_shrunk_object_is_refused_instead_of_faulting(registry: SharedMemoryRegistry) -> None:
    shm = mpshm.SharedMemory(f"mp_test_{uuid.uuid4().hex[:12]}", create=True, size=SIZE)
    try:
        registry.register("r", key_of(shm), 0, SIZE)
        with open(f"/dev/shm/{shm.name.lstrip('/')}", "r+b") as f:  # the client truncates it
            f.truncate(16)
        with pytest.raises(InferenceError, match="shrank to 16 bytes"):
            registry.read("input 'x'", TensorPlace("r", 0, 4), "FP32", (1,))
        with pytest.raises(InferenceError, match="shrank to 16 bytes"):
            registry.write("output 'y'", TensorPlace("r", 0, 4), np.zeros(1, np.float32))
    finally:
        registry.close()
        shm.close()
        shm.unlink()


def test_unregister_all_and_views_outliving_their_region(segment: mpshm.SharedMemory) -> None:
    registry = SharedMemoryRegistry()
    registry.register("a", key_of(segment), 0, 64)
    registry.register("b", key_of(segment), 64, 64)
    buf(segment)[:4] = np.array([5], np.int32).tobytes()
    view = registry.read("input 'x'", TensorPlace("a", 0, 4), "INT32", (1,))
    registry.unregister()  # a request still holds a view: its mapping stays until the view goes
    assert registry.status() == []
    assert int(view[0]) == 5
    del view


# --- the codec with shared memory --------------------------------------------------------------


def test_http_codec_reads_inputs_and_places_outputs(
    registry: SharedMemoryRegistry, segment: mpshm.SharedMemory
) -> None:
    registry.register("r", key_of(segment), 0, 256)
    np.ndarray((2, 2), np.float32, buffer=buf(segment))[:] = [[1, 2], [3, 4]]
    shm = {"shared_memory_region": "r", "shared_memory_byte_size": 16}
    doc = {
        "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "parameters": shm}],
        "outputs": [
            {"name": "y", "parameters": {**shm, "shared_memory_offset": 16}},
            {"name": "z", "parameters": {"binary_data": True}},
        ],
    }
    request = decode_request(json.dumps(doc).encode(), None, registry)
    np.testing.assert_array_equal(request.inputs[0].array, [[1, 2], [3, 4]])
    assert request.outputs is not None
    assert request.outputs[0].place == TensorPlace("r", 16, 16)
    assert request.shared_outputs() == frozenset({"y"})
    y, z = np.ones((2, 2), np.float32), np.zeros(1, np.int32)
    payload, length = encode_response(
        "m", "1", "", [("y", "FP32", y, False), ("z", "INT32", z, True)], request.shared_outputs()
    )
    assert length is not None
    header = json.loads(payload[:length])
    assert header["outputs"][0] == {"name": "y", "datatype": "FP32", "shape": [2, 2]}  # no data
    assert payload[length:] == z.tobytes()


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (
            {"parameters": {"shared_memory_region": "nope", "shared_memory_byte_size": 16}},
            "unknown shared memory region 'nope'",
        ),
        (
            {
                "parameters": {
                    "shared_memory_region": "r",
                    "shared_memory_byte_size": 16,
                    "shared_memory_offset": 250,
                }
            },
            "do not fit",
        ),
        ({"parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 12}}, "needs 16 bytes"),
        (
            {
                "data": [1, 2, 3, 4],
                "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 16},
            },
            "must not have 'data'",
        ),
    ],
)
def test_http_codec_refuses_bad_shared_inputs(
    registry: SharedMemoryRegistry, segment: mpshm.SharedMemory, tensor: dict[str, object], message: str
) -> None:
    registry.register("r", key_of(segment), 0, 256)
    doc = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", **tensor}]}
    with pytest.raises(InferenceError, match=message):
        decode_request(json.dumps(doc).encode(), None, registry)


def test_http_codec_refuses_bad_shared_outputs_before_running(
    registry: SharedMemoryRegistry, segment: mpshm.SharedMemory
) -> None:
    registry.register("r", key_of(segment), 0, 256)
    inputs = [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]
    for params, message in [
        (
            {"shared_memory_region": "nope", "shared_memory_byte_size": 4},
            "output 'y': unknown shared memory region",
        ),
        (
            {"shared_memory_region": "r", "shared_memory_byte_size": 257},
            "output 'y': 257 bytes at offset 0 do not fit",
        ),
    ]:
        doc = {"inputs": inputs, "outputs": [{"name": "y", "parameters": params}]}
        with pytest.raises(InferenceError, match=message):
            decode_request(json.dumps(doc).encode(), None, registry)
    doc = {
        "inputs": inputs,
        "outputs": [{"name": "y", "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 4}}],
    }
    with pytest.raises(InferenceError, match="not served here"):
        decode_request(json.dumps(doc).encode(), None)
