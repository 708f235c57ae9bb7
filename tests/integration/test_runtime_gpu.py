"""CUDA inference: GPU answers equal the CPU ones, fp16/bf16 stay close to fp32 (skipped without CUDA)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as httpclient

from modelplane.serving.runtime.config import parse_config
from modelplane.serving.runtime.runner import TorchRunner, pick_device
from modelplane.testing.runtime import RuntimeProcess, make_mlp, mlp_config, write_model

pytestmark = pytest.mark.gpu

GPU_GROUP = "instance_group [ { kind: KIND_GPU count: 1 } ]"


def gpu_config(name: str, precision: str = "fp32") -> str:
    text = mlp_config(name).replace("instance_group [ { kind: KIND_CPU count: 1 } ]", GPU_GROUP)
    return text + f'parameters {{ key: "precision" value {{ string_value: "{precision}" }} }}\n'


def test_gpu_device_is_picked_for_kind_gpu() -> None:
    assert pick_device("GPU").type == "cuda"
    assert pick_device("AUTO").type == "cuda"
    assert pick_device("CPU").type == "cpu"


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-4), ("fp16", 2e-2), ("bf16", 6e-2)])
def test_runner_on_cuda_matches_cpu(precision: str, tolerance: float) -> None:
    model = make_mlp(seed=7)
    x = np.random.default_rng(0).standard_normal((32, 64), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    spec = parse_config(gpu_config("m", precision), "m")
    device = torch.device("cuda")
    module = make_mlp(seed=7).to(device)
    module = (
        module.half() if precision == "fp16" else module.to(torch.bfloat16) if precision == "bf16" else module
    )
    (got,) = TorchRunner(module, spec, device).run([x])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


def test_server_serves_on_cuda_and_reports_gpu_memory(tmp_path: Path) -> None:
    model = make_mlp(seed=8)
    repo = tmp_path / "models"
    write_model(repo, "gpu32", model, gpu_config("gpu32"))
    write_model(repo, "gpu16", model, gpu_config("gpu16", "fp16"))
    x = np.random.default_rng(1).standard_normal((8, 64), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    with RuntimeProcess(repo) as server:
        client = httpclient.InferenceServerClient(server.http_address)
        inp = httpclient.InferInput("INPUT__0", [8, 64], "FP32")
        inp.set_data_from_numpy(x)
        full = client.infer("gpu32", [inp]).as_numpy("OUTPUT__0")
        half = client.infer("gpu16", [inp]).as_numpy("OUTPUT__0")
        np.testing.assert_allclose(full, want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(half, full, rtol=2e-2, atol=2e-2)
        metrics = httpx.get(server.http_url + "/metrics", timeout=10).text
        assert 'modelplane_runtime_gpu_memory_bytes{device="0",kind="allocated"}' in metrics
