"""``modelplane registry versions create`` registers versions the operator serves: the signature
comes from ``--signature`` (a file or inline JSON) or is read from a ``.pt2`` program, and the
operator's resolver turns the version into a runtime configuration. A TorchScript file without
``--signature`` is still registered, with a warning that says how to make it servable; a bad
``--signature`` creates nothing.

Real registry process, real torch models (tiny, built here), the CLI as users run it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from modelplane.api.v1alpha1 import ModelSource
from modelplane.resolution.registry import RegistryResolver
from modelplane.resolution.resolver import ResolutionError, ServingOptions
from modelplane.serving.runtime.artifacts import TOKEN_ENV, fetch
from modelplane.serving.runtime.config import parse_config
from modelplane.serving.runtime.loader import load_module
from modelplane.serving.runtime.runner import TorchRunner
from modelplane.testing.registry import ADMIN_TOKEN, RegistryProcess

SIGNATURE = {
    "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 3]}],
}
OPTIONS = ServingOptions(max_batch_size=8, max_latency_ms=2.0, gpus=0)
SAMPLE = np.array([[0.1, -0.2, 3.1, 2.9], [3.0, 3.0, 0.0, 0.0]], dtype=np.float32)


@dataclass(frozen=True)
class Models:
    torchscript: Path  # model.pt
    exported: Path  # model.pt2, dynamic batch dimension
    expected: np.ndarray[Any, Any]  # the model's answer to SAMPLE


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3), torch.nn.Softmax(-1)
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    folder = tmp_path_factory.mktemp("models")
    model = _tiny_model().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(model).save(str(folder / "model.pt"))  # type: ignore[no-untyped-call]
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (torch.zeros(2, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(folder / "model.pt2"))
    with torch.no_grad():
        expected = model(torch.from_numpy(SAMPLE)).numpy()
    return Models(folder / "model.pt", folder / "model.pt2", expected)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    base = tmp_path_factory.mktemp("registry")
    process = RegistryProcess(f"sqlite:///{base / 'r.db'}", base / "artifacts", base / "registry.log").start()
    try:
        yield process
    finally:
        process.stop()


def cli(server: RegistryProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "COLUMNS": "200",
        "MODELPLANE_REGISTRY_URL": server.url,
        "MODELPLANE_REGISTRY_TOKEN": ADMIN_TOKEN,
    }
    return subprocess.run(
        [sys.executable, "-m", "modelplane.serving.registry", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def resolve(server: RegistryProcess, name: str, version: int) -> str:
    """What the operator does with a version: its runtime configuration (config.pbtxt)."""
    resolver = RegistryResolver(server.url, ADMIN_TOKEN)
    resolved = asyncio.run(resolver.resolve(name, ModelSource(version=version), "stable", OPTIONS))
    return resolved.served.config_pbtxt


def serve_once(
    config_pbtxt: str, name: str, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> list[np.ndarray[Any, Any]]:
    """What the runtime does with the configuration: fetch, check, load, warm up, answer SAMPLE."""
    spec = parse_config(config_pbtxt, name)
    assert spec.artifact_uri is not None
    monkeypatch.setenv(TOKEN_ENV, ADMIN_TOKEN)
    path = fetch(
        spec.artifact_uri, spec.artifact_sha256, cache, filename=spec.default_model_filename or "model.pt"
    )
    device = torch.device("cpu")
    runner = TorchRunner(load_module(path, spec, device), spec, device)
    runner.warm_up()
    return runner.run([SAMPLE])


def test_pt2_signature_is_read_from_the_program_and_resolves(server: RegistryProcess, models: Models) -> None:
    with server.client() as client:
        client.create_model("iris-pt2")
    made = cli(server, "versions", "create", "iris-pt2", "--artifact", str(models.exported))
    assert made.returncode == 0, made.stderr
    version = json.loads(made.stdout)
    assert version["status"] == "READY"
    assert version["signature"] == SIGNATURE
    assert "warning" not in made.stderr
    config = parse_config(resolve(server, "iris-pt2", version["version"]), "iris-pt2")
    assert config.max_batch_size == OPTIONS.max_batch_size  # the -1 first dimension batches
    assert [(t.name, t.datatype, t.dims) for t in config.inputs] == [("INPUT__0", "FP32", (4,))]
    assert [(t.name, t.datatype, t.dims) for t in config.outputs] == [("OUTPUT__0", "FP32", (3,))]


def test_runtime_loads_a_registered_pt2(
    server: RegistryProcess, models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with server.client() as client:
        client.create_model("iris-pt2-served")
    made = cli(server, "versions", "create", "iris-pt2-served", "--artifact", str(models.exported))
    assert made.returncode == 0, made.stderr
    config = resolve(server, "iris-pt2-served", json.loads(made.stdout)["version"])
    [probabilities] = serve_once(config, "iris-pt2-served", tmp_path, monkeypatch)
    np.testing.assert_allclose(probabilities, models.expected, rtol=1e-5)


def test_pt_with_a_signature_file_or_inline_json_is_served(
    server: RegistryProcess, models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with server.client() as client:
        client.create_model("iris-pt")
    signature_file = tmp_path / "signature.yaml"
    signature_file.write_text(
        "inputs:\n  - {name: INPUT__0, datatype: FP32, shape: [-1, 4]}\n"
        "outputs:\n  - {name: OUTPUT__0, datatype: FP32, shape: [-1, 3]}\n"
    )
    for value in (str(signature_file), json.dumps(SIGNATURE)):
        made = cli(
            server,
            "versions",
            "create",
            "iris-pt",
            "--artifact",
            str(models.torchscript),
            "--signature",
            value,
        )
        assert made.returncode == 0, made.stderr
        version = json.loads(made.stdout)
        assert version["signature"] == SIGNATURE
        assert "warning" not in made.stderr
        config = resolve(server, "iris-pt", version["version"])
        [probabilities] = serve_once(config, "iris-pt", tmp_path / f"cache-{version['version']}", monkeypatch)
        np.testing.assert_allclose(probabilities, models.expected, rtol=1e-5)


def test_pt_without_a_signature_is_registered_with_a_warning(server: RegistryProcess, models: Models) -> None:
    with server.client() as client:
        client.create_model("iris-unsigned")
    made = cli(server, "versions", "create", "iris-unsigned", "--artifact", str(models.torchscript))
    assert made.returncode == 0, made.stderr
    version = json.loads(made.stdout)
    assert version["status"] == "READY"
    assert version["signature"] is None
    warning = " ".join(made.stderr.split())
    assert "iris-unsigned version 1 has no signature, so the operator will not serve it" in warning
    assert "TorchScript" in warning
    assert (
        f"modelplane registry versions create iris-unsigned --artifact {models.torchscript} --signature"
        in warning
    )
    with pytest.raises(ResolutionError) as caught:
        resolve(server, "iris-unsigned", version["version"])
    assert caught.value.reason == "SignatureInvalid"
    assert not caught.value.temporary


@pytest.fixture(scope="module")
def refused(server: RegistryProcess) -> str:
    with server.client() as client:
        client.create_model("iris-refused")
    return "iris-refused"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('{"inputs": [', "not valid JSON"),
        (
            json.dumps({**SIGNATURE, "inputs": [{"name": "x", "datatype": "fp32", "shape": [-1]}]}),
            "inputs.0.datatype",
        ),
        (json.dumps({"inputs": SIGNATURE["inputs"], "outputs": []}), "at least one input and one output"),
        (
            json.dumps({**SIGNATURE, "outputs": [{"name": "y", "datatype": "BYTES", "shape": [-1]}]}),
            "cannot take",
        ),
        ("no-such-signature.json", "neither a file nor inline JSON"),
    ],
    ids=["bad-json", "bad-datatype", "no-outputs", "bytes", "no-file"],
)
def test_a_bad_signature_creates_nothing(
    server: RegistryProcess, models: Models, refused: str, value: str, says: str
) -> None:
    name = refused
    with server.client() as client:
        before = client.get_model(name).latest_version
        made = cli(
            server, "versions", "create", name, "--artifact", str(models.torchscript), "--signature", value
        )
        assert made.returncode == 1
        message = " ".join(made.stderr.split())
        assert says in message
        assert "no version was created" in message
        assert "Traceback" not in made.stderr
        assert made.stdout == ""
        assert client.get_model(name).latest_version == before
