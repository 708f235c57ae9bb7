"""tritonclient (HTTP with binary data on and off, gRPC) against a real runtime serving TorchScript models."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from modelplane.testing.runtime import RuntimeProcess, make_mlp, mlp_config, save_torchscript, write_model


def expected(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out: np.ndarray = model(torch.from_numpy(x)).numpy()
        return out


@pytest.fixture(scope="module")
def http_client(runtime_server: RuntimeProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(runtime_server.http_address)


@pytest.fixture(scope="module")
def grpc_client(runtime_server: RuntimeProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(runtime_server.grpc_address)


def test_http_server_and_model_metadata(http_client: httpclient.InferenceServerClient) -> None:
    assert http_client.is_server_live()
    assert http_client.is_server_ready()
    assert http_client.is_model_ready("mlp")
    assert http_client.is_model_ready("mlp", "1")
    meta = http_client.get_server_metadata()
    assert meta["name"] == "modelplane"
    assert "binary_tensor_data" in meta["extensions"]
    model = http_client.get_model_metadata("mlp")
    assert model["name"] == "mlp"
    assert model["versions"] == ["1"]
    assert model["platform"] == "pytorch_libtorch"
    assert model["inputs"] == [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 64]}]
    assert model["outputs"] == [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 10]}]
    config = http_client.get_model_config("mlp")
    assert config["max_batch_size"] == 64
    assert config["input"][0]["name"] == "INPUT__0"
    assert config["input"][0]["data_type"] == "TYPE_FP32"


def test_grpc_server_and_model_metadata(grpc_client: grpcclient.InferenceServerClient) -> None:
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("mlp")
    assert grpc_client.get_server_metadata().name == "modelplane"
    model = grpc_client.get_model_metadata("mlp")
    assert model.name == "mlp"
    assert list(model.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("INPUT__0", "FP32", [-1, 64])]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [("OUTPUT__0", "FP32", [-1, 10])]
    config = grpc_client.get_model_config("mlp").config
    assert config.max_batch_size == 64
    assert config.dynamic_batching.max_queue_delay_microseconds == 500


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer_matches_torch(
    http_client: httpclient.InferenceServerClient, reference_mlp: torch.nn.Module, batch: int, binary: bool
) -> None:
    x = np.random.default_rng(batch).standard_normal((batch, 64), dtype=np.float32)
    inp = httpclient.InferInput("INPUT__0", [batch, 64], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUTPUT__0", binary_data=binary)
    result = http_client.infer("mlp", [inp], outputs=[out], request_id="req-7")
    response = result.get_response()
    assert response["model_name"] == "mlp"
    assert response["id"] == "req-7"
    assert ("parameters" in response["outputs"][0]) is binary
    np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), expected(reference_mlp, x), rtol=1e-5, atol=1e-5)


def test_http_infer_without_requested_outputs_returns_all_in_binary(
    http_client: httpclient.InferenceServerClient, reference_mlp: torch.nn.Module
) -> None:
    x = np.ones((2, 64), dtype=np.float32)
    inp = httpclient.InferInput("INPUT__0", [2, 64], "FP32")
    inp.set_data_from_numpy(x)
    result = http_client.infer("mlp", [inp], model_version="1")
    np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), expected(reference_mlp, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 8])
def test_grpc_infer_matches_torch(
    grpc_client: grpcclient.InferenceServerClient, reference_mlp: torch.nn.Module, batch: int
) -> None:
    x = np.random.default_rng(10 + batch).standard_normal((batch, 64), dtype=np.float32)
    inp = grpcclient.InferInput("INPUT__0", [batch, 64], "FP32")
    inp.set_data_from_numpy(x)
    result = grpc_client.infer(
        "mlp", [inp], outputs=[grpcclient.InferRequestedOutput("OUTPUT__0")], request_id="g1"
    )
    assert result.get_response().id == "g1"
    np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), expected(reference_mlp, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_two_inputs_two_outputs_and_variable_dims(
    http_client: httpclient.InferenceServerClient, binary: bool
) -> None:
    for width in (3, 7):
        x = np.arange(2 * width, dtype=np.float32).reshape(2, width)
        scale = np.array([[2], [5]], dtype=np.int64)
        a = httpclient.InferInput("X", [2, width], "FP32")
        a.set_data_from_numpy(x, binary_data=binary)
        b = httpclient.InferInput("SCALE", [2, 1], "INT64")
        b.set_data_from_numpy(scale, binary_data=binary)
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("SCALED", "SUM")]
        result = http_client.infer("two", [a, b], outputs=outs)
        assert [o["name"] for o in result.get_response()["outputs"]] == ["SCALED", "SUM"]
        np.testing.assert_array_equal(result.as_numpy("SCALED"), x * scale)
        np.testing.assert_array_equal(result.as_numpy("SUM"), x.sum(axis=1, keepdims=True))


def test_grpc_two_inputs(grpc_client: grpcclient.InferenceServerClient) -> None:
    x = np.arange(6, dtype=np.float32).reshape(1, 6)
    a = grpcclient.InferInput("X", [1, 6], "FP32")
    a.set_data_from_numpy(x)
    b = grpcclient.InferInput("SCALE", [1, 1], "INT64")
    b.set_data_from_numpy(np.array([[3]], dtype=np.int64))
    result = grpc_client.infer("two", [a, b])
    np.testing.assert_array_equal(result.as_numpy("SCALED"), x * 3)
    np.testing.assert_array_equal(result.as_numpy("SUM"), [[15.0]])


def batch_histogram(server: RuntimeProcess, model: str) -> tuple[float, float]:
    """(number of forward passes, samples in them) for ``model`` from the metrics endpoint."""
    text = httpx.get(server.http_url + "/metrics", timeout=10).text
    count = re.search(rf'modelplane_runtime_batch_size_count{{model="{model}"}} (\S+)', text)
    total = re.search(rf'modelplane_runtime_batch_size_sum{{model="{model}"}} (\S+)', text)
    return (float(count.group(1)) if count else 0.0, float(total.group(1)) if total else 0.0)


def test_64_concurrent_requests_are_batched_and_each_gets_its_own_result(
    runtime_server: RuntimeProcess, reference_mlp: torch.nn.Module
) -> None:
    before = batch_histogram(runtime_server, "mlp_batched")
    rng = np.random.default_rng(64)
    inputs = [rng.standard_normal((1, 64), dtype=np.float32) for _ in range(64)]

    def call(x: np.ndarray) -> np.ndarray:
        client = httpclient.InferenceServerClient(runtime_server.http_address, network_timeout=60)
        inp = httpclient.InferInput("INPUT__0", [1, 64], "FP32")
        inp.set_data_from_numpy(x)
        try:
            out: np.ndarray = client.infer("mlp_batched", [inp]).as_numpy("OUTPUT__0")
            return out
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(call, inputs, timeout=120))
    for x, got in zip(inputs, results, strict=True):
        np.testing.assert_allclose(got, expected(reference_mlp, x), rtol=1e-5, atol=1e-5)
    after = batch_histogram(runtime_server, "mlp_batched")
    passes, samples = after[0] - before[0], after[1] - before[1]
    assert samples == 64
    assert passes < 64, "64 concurrent requests ran as 64 separate forwards: no batching happened"


def test_model_exception_fails_only_its_own_request(runtime_server: RuntimeProcess) -> None:
    """The faulty model raises on negative input; good requests batched with it still succeed."""
    before = batch_histogram(runtime_server, "faulty")

    def call(x: np.ndarray) -> tuple[int, np.ndarray | str]:
        client = httpclient.InferenceServerClient(runtime_server.http_address, network_timeout=60)
        inp = httpclient.InferInput("INPUT__0", [1, 4], "FP32")
        inp.set_data_from_numpy(x)
        try:
            return 200, client.infer("faulty", [inp]).as_numpy("OUTPUT__0")
        except InferenceServerException as exc:
            return int(exc.status() or 0), str(exc.message())
        finally:
            client.close()

    inputs = [np.full((1, 4), float(i), dtype=np.float32) for i in range(1, 6)]
    inputs.insert(2, np.full((1, 4), -1.0, dtype=np.float32))
    with ThreadPoolExecutor(max_workers=len(inputs)) as pool:
        results = list(pool.map(call, inputs, timeout=60))
    for x, (status, body) in zip(inputs, results, strict=True):
        if x[0, 0] < 0:
            assert status == 500
            assert "negative input" in str(body)
        else:
            assert status == 200
            np.testing.assert_array_equal(body, x * 2)
    passes, samples = (a - b for a, b in zip(batch_histogram(runtime_server, "faulty"), before, strict=True))
    assert samples == 6
    assert passes < 6


def test_metrics_are_exposed_on_both_ports(
    runtime_server: RuntimeProcess, http_client: httpclient.InferenceServerClient
) -> None:
    inp = httpclient.InferInput("INPUT__0", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    http_client.infer("mlp", [inp])
    for url in (runtime_server.http_url, f"http://127.0.0.1:{runtime_server.metrics_port}"):
        text = httpx.get(url + "/metrics", timeout=10).text
        assert re.search(
            r'modelplane_runtime_requests_total{code="200",model="mlp",protocol="http"} [1-9]', text
        )
        assert 'modelplane_runtime_inflight_requests{model="mlp"} 0.0' in text
        assert 'modelplane_runtime_request_duration_seconds_count{model="mlp",protocol="http"}' in text
        assert 'modelplane_runtime_queue_duration_seconds_count{model="mlp"}' in text


def test_repository_index_unload_and_load(
    http_client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient
) -> None:
    index = {row["name"]: row for row in http_client.get_model_repository_index()}
    assert index["scratch"]["state"] == "READY"
    x = np.zeros((1, 64), dtype=np.float32)
    inp = httpclient.InferInput("INPUT__0", [1, 64], "FP32")
    inp.set_data_from_numpy(x)

    http_client.unload_model("scratch")
    assert not http_client.is_model_ready("scratch")
    assert not grpc_client.is_model_ready("scratch")  # False, as Triton answers, not NOT_FOUND
    assert not grpc_client.is_model_ready("no_such_model")
    with pytest.raises(InferenceServerException) as info:
        http_client.infer("scratch", [inp])
    assert info.value.status() == "404"
    index = {row["name"]: row for row in http_client.get_model_repository_index()}
    assert index["scratch"]["state"] == "UNAVAILABLE"

    grpc_client.load_model("scratch")
    assert http_client.is_model_ready("scratch")
    assert http_client.infer("scratch", [inp]).as_numpy("OUTPUT__0").shape == (1, 10)
    with pytest.raises(InferenceServerException):
        http_client.load_model("no_such_model")
    assert http_client.is_server_ready()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_bodies(
    http_client: httpclient.InferenceServerClient, reference_mlp: torch.nn.Module, algorithm: str
) -> None:
    x = np.random.default_rng(3).standard_normal((4, 64), dtype=np.float32)
    inp = httpclient.InferInput("INPUT__0", [4, 64], "FP32")
    inp.set_data_from_numpy(x)
    result = http_client.infer("mlp", [inp], request_compression_algorithm=algorithm)
    np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), expected(reference_mlp, x), rtol=1e-5, atol=1e-5)


def test_load_a_new_model_then_reload_a_new_version(
    runtime_server: RuntimeProcess, http_client: httpclient.InferenceServerClient
) -> None:
    """Models added to the repository after start are loaded on request; a reload swaps versions."""
    name = "added_later"
    first, second = make_mlp(seed=21), make_mlp(seed=22)
    write_model(runtime_server.repository, name, first, mlp_config(name, max_batch_size=4, delay_us=0))
    x = np.random.default_rng(5).standard_normal((2, 64), dtype=np.float32)
    inp = httpclient.InferInput("INPUT__0", [2, 64], "FP32")
    inp.set_data_from_numpy(x)
    try:
        assert not http_client.is_model_ready(name)
        http_client.load_model(name)
        np.testing.assert_allclose(
            http_client.infer(name, [inp]).as_numpy("OUTPUT__0"), expected(first, x), atol=1e-5
        )

        save_torchscript(second, runtime_server.repository / name / "2" / "model.pt")
        http_client.load_model(name)
        assert http_client.get_model_metadata(name)["versions"] == ["2"]
        result = http_client.infer(name, [inp])
        assert result.get_response()["model_version"] == "2"
        np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), expected(second, x), atol=1e-5)
    finally:
        http_client.unload_model(name)
    assert not http_client.is_model_ready(name)
    assert http_client.is_server_ready()


def test_grpc_typed_contents_are_accepted(
    runtime_server: RuntimeProcess, reference_mlp: torch.nn.Module
) -> None:
    """Clients that fill ``contents.fp32_contents`` instead of raw bytes get the same answer."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    x = np.random.default_rng(6).standard_normal((2, 64), dtype=np.float32)
    request = service_pb2.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="INPUT__0", datatype="FP32", shape=[2, 64])
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    channel = grpc.insecure_channel(runtime_server.grpc_address)
    try:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    finally:
        channel.close()
    got = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(2, 10)
    np.testing.assert_allclose(got, expected(reference_mlp, x), rtol=1e-5, atol=1e-5)
