"""Triton's system shared memory extension, driven by NVIDIA's clients and shared memory utilities
against a real ``modelplane runtime``: register, infer with tensors in shared memory, status,
unregister; every bad region, offset or size refused with the protocol's error while the server
keeps serving."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from modelplane.testing.runtime import (
    LARGE_ELEMENTS,
    RuntimeProcess,
    SumAndDouble,
    TwoInputs,
    large_tensor_config,
    make_mlp,
    mlp_config,
    two_input_config,
    write_model,
)

Client = httpclient.InferenceServerClient | grpcclient.InferenceServerClient
PROTOCOLS = ["http", "grpc"]


@pytest.fixture(scope="module")
def mlp() -> torch.nn.Module:
    return make_mlp(seed=3)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mlp: torch.nn.Module) -> Iterator[RuntimeProcess]:
    root: Path = tmp_path_factory.mktemp("shm") / "models"
    write_model(root, "mlp", mlp, mlp_config("mlp", max_batch_size=8, delay_us=0))
    write_model(root, "two", TwoInputs(), two_input_config("two"))
    write_model(root, "large", SumAndDouble(), large_tensor_config("large"))
    runtime = RuntimeProcess(root, ("--threads", "1"))
    runtime.start()
    try:
        yield runtime
    finally:
        assert runtime.stop() == 0  # exits cleanly with regions still registered


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(server: RuntimeProcess, protocol: str) -> Iterator[Any]:
    c: Any = (
        httpclient.InferenceServerClient(server.http_address, network_timeout=60)
        if protocol == "http"
        else grpcclient.InferenceServerClient(server.grpc_address)
    )
    try:
        yield c
    finally:
        c.unregister_system_shared_memory()
        c.close()


@pytest.fixture
def regions() -> Iterator[Callable[[int], tuple[str, str, Any]]]:
    """Make client-side shared memory regions: ``(region name, key, handle)``; destroyed after."""
    made: list[Any] = []

    def make(byte_size: int) -> tuple[str, str, Any]:
        tag = uuid.uuid4().hex[:10]
        name, key = f"region_{tag}", f"/mp_shm_{tag}"
        handle = shm.create_shared_memory_region(name, key, byte_size)
        made.append(handle)
        return name, key, handle

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def mod(protocol: str) -> Any:
    return httpclient if protocol == "http" else grpcclient


def regions_listed(client: Any, protocol: str, name: str = "") -> dict[str, tuple[str, int, int]]:
    """Status as ``{name: (key, offset, byte_size)}``, whatever the protocol."""
    if protocol == "http":
        return {
            r["name"]: (r["key"], r["offset"], r["byte_size"])
            for r in client.get_system_shared_memory_status(name)
        }
    status = client.get_system_shared_memory_status(name)
    return {n: (r.key, r.offset, r.byte_size) for n, r in status.regions.items()}


def refused(protocol: str, call: Callable[[], object], message: str) -> None:
    with pytest.raises(InferenceServerException, match=message) as caught:
        call()
    assert caught.value.status() == ("400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT")


def test_the_extension_is_listed(server: RuntimeProcess) -> None:
    assert (
        "system_shared_memory"
        in httpclient.InferenceServerClient(server.http_address).get_server_metadata()["extensions"]
    )
    assert (
        "system_shared_memory"
        in grpcclient.InferenceServerClient(server.grpc_address).get_server_metadata().extensions
    )


def test_register_infer_status_unregister(
    client: Any, protocol: str, regions: Callable[[int], tuple[str, str, Any]], mlp: torch.nn.Module
) -> None:
    m = mod(protocol)
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    in_name, in_key, in_handle = regions(x.nbytes)
    out_name, out_key, out_handle = regions(4096)
    shm.set_shared_memory_region(in_handle, [x])
    client.register_system_shared_memory(in_name, in_key, x.nbytes)
    client.register_system_shared_memory(out_name, out_key, 4096)
    assert regions_listed(client, protocol) == {in_name: (in_key, 0, x.nbytes), out_name: (out_key, 0, 4096)}
    assert regions_listed(client, protocol, out_name) == {out_name: (out_key, 0, 4096)}

    inp = m.InferInput("INPUT__0", [3, 64], "FP32").set_shared_memory(in_name, x.nbytes)
    out = m.InferRequestedOutput("OUTPUT__0")
    out.set_shared_memory(out_name, 3 * 10 * 4, offset=64)
    result = client.infer("mlp", [inp], outputs=[out])
    entry = result.get_output("OUTPUT__0")
    shape = entry["shape"] if protocol == "http" else list(entry.shape)
    assert shape == [3, 10]
    if protocol == "http":
        assert "data" not in entry  # the protocol: no data in the answer for a shared memory output
    got = shm.get_contents_as_numpy(out_handle, np.float32, shape, offset=64)
    with torch.no_grad():
        want = mlp(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    plain = m.InferInput("INPUT__0", [3, 64], "FP32")
    plain.set_data_from_numpy(x)
    np.testing.assert_array_equal(got, client.infer("mlp", [plain]).as_numpy("OUTPUT__0"))

    client.unregister_system_shared_memory(in_name)
    assert set(regions_listed(client, protocol)) == {out_name}
    refused(protocol, lambda: client.infer("mlp", [inp]), f"unknown shared memory region '{in_name}'")
    client.unregister_system_shared_memory()
    assert regions_listed(client, protocol) == {}


def test_inputs_and_outputs_mix_shared_memory_and_the_message(
    client: Any, protocol: str, regions: Callable[[int], tuple[str, str, Any]]
) -> None:
    m = mod(protocol)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    scale = np.array([[3], [5]], dtype=np.int64)
    name, key, handle = regions(1024)
    shm.set_shared_memory_region(handle, [x], offset=128)
    client.register_system_shared_memory(name, key, 1024)
    x_in = m.InferInput("X", [2, 4], "FP32").set_shared_memory(name, x.nbytes, offset=128)
    scale_in = m.InferInput("SCALE", [2, 1], "INT64")
    scale_in.set_data_from_numpy(scale)
    sum_out = m.InferRequestedOutput("SUM")
    sum_out.set_shared_memory(name, 8, offset=512)
    scaled_out = m.InferRequestedOutput("SCALED")
    result = client.infer("two", [x_in, scale_in], outputs=[sum_out, scaled_out])
    np.testing.assert_array_equal(result.as_numpy("SCALED"), x * scale)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(handle, np.float32, [2, 1], offset=512), x.sum(1, keepdims=True)
    )


def test_a_4_mib_tensor_round_trips(
    client: Any, protocol: str, regions: Callable[[int], tuple[str, str, Any]]
) -> None:
    m = mod(protocol)
    x = np.random.default_rng(7).standard_normal(LARGE_ELEMENTS).astype(np.float32)
    in_name, in_key, in_handle = regions(x.nbytes)
    out_name, out_key, out_handle = regions(x.nbytes)
    shm.set_shared_memory_region(in_handle, [x])
    client.register_system_shared_memory(in_name, in_key, x.nbytes)
    client.register_system_shared_memory(out_name, out_key, x.nbytes)
    inp = m.InferInput("INPUT__0", [LARGE_ELEMENTS], "FP32").set_shared_memory(in_name, x.nbytes)
    doubled = m.InferRequestedOutput("DOUBLED")
    doubled.set_shared_memory(out_name, x.nbytes)
    total = m.InferRequestedOutput("SUM")
    result = client.infer("large", [inp], outputs=[doubled, total])
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [LARGE_ELEMENTS]), x * 2)
    np.testing.assert_allclose(result.as_numpy("SUM"), [x.sum(dtype=np.float64)], rtol=1e-4)
    plain = m.InferInput("INPUT__0", [LARGE_ELEMENTS], "FP32")
    plain.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer("large", [plain]).as_numpy("DOUBLED"), x * 2)


def test_bad_regions_offsets_and_sizes_are_refused_and_the_server_keeps_serving(
    client: Any, protocol: str, regions: Callable[[int], tuple[str, str, Any]], mlp: torch.nn.Module
) -> None:
    m = mod(protocol)
    x = np.ones((1, 64), dtype=np.float32)
    name, key, handle = regions(1024)
    shm.set_shared_memory_region(handle, [x])
    client.register_system_shared_memory(name, key, 512)  # the region: the first half of the object

    def shared_input(region: str, byte_size: int, offset: int = 0) -> Any:
        return m.InferInput("INPUT__0", [1, 64], "FP32").set_shared_memory(region, byte_size, offset)

    def still_serving() -> None:
        ok = client.infer("mlp", [shared_input(name, 256)])
        with torch.no_grad():
            np.testing.assert_allclose(
                ok.as_numpy("OUTPUT__0"), mlp(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6
            )

    def shared_output(byte_size: int, offset: int = 0, region: str = name) -> Any:
        out = m.InferRequestedOutput("OUTPUT__0")
        out.set_shared_memory(region, byte_size, offset)
        return out

    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: client.infer("mlp", [shared_input("nope", 256)]), "unknown shared memory region 'nope'"),
        (
            lambda: client.infer("mlp", [shared_input(name, 256, offset=257)]),
            "256 bytes at offset 257 do not fit",
        ),
        (
            lambda: client.infer("mlp", [shared_input(name, 256, offset=512)]),
            "do not fit in shared memory region",
        ),
        (lambda: client.infer("mlp", [shared_input(name, 513)]), "513 bytes at offset 0 do not fit"),
        (
            lambda: client.infer("mlp", [shared_input(name, 252)]),
            r"needs 256 bytes, shared_memory_byte_size is 252",
        ),
        (
            lambda: client.infer("mlp", [shared_input(name, 256)], outputs=[shared_output(40, offset=480)]),
            "do not fit",
        ),
        (
            lambda: client.infer("mlp", [shared_input(name, 256)], outputs=[shared_output(36)]),
            "takes 40 bytes",
        ),
        (
            lambda: client.infer(
                "mlp", [shared_input(name, 256)], outputs=[shared_output(40, region="nope")]
            ),
            "output 'OUTPUT__0': unknown shared memory region 'nope'",
        ),
        (lambda: client.register_system_shared_memory(name, key, 512), "already registered"),
        (
            lambda: client.register_system_shared_memory("other", "/mp_shm_missing_" + uuid.uuid4().hex, 64),
            "cannot open shared memory key",
        ),
        (lambda: client.register_system_shared_memory("other", key, 1025), "do not fit in shared memory key"),
        (
            lambda: client.register_system_shared_memory("other", key, 64, offset=1000),
            "64 bytes at offset 1000 do not fit",
        ),
        (
            lambda: client.register_system_shared_memory("other", "/../../etc/passwd", 64),
            "not a valid POSIX shared memory name",
        ),
        (lambda: client.get_system_shared_memory_status("nope"), "unknown shared memory region 'nope'"),
    ]
    for call, message in cases:
        refused(protocol, call, message)
        still_serving()
    assert set(regions_listed(client, protocol)) == {name}  # nothing was registered by the bad calls


def test_cuda_shared_memory_is_refused_clearly(client: Any, protocol: str) -> None:
    message = "CUDA shared memory is not available on this server"
    refused(protocol, lambda: client.get_cuda_shared_memory_status(), message)
    refused(protocol, lambda: client.register_cuda_shared_memory("c", b"aGFuZGxl", 0, 64), message)
    refused(protocol, lambda: client.unregister_cuda_shared_memory(), message)
    assert client.is_server_ready()
