"""The operator as a real process for e2e tests, plus a registry holding a real torch model.

``OperatorProcess`` runs ``modelplane operator`` against the test cluster's kubeconfig; ``kill()``
sends SIGKILL (crash tests), ``start()`` again resumes. ``register_mlp`` puts TorchScript MLPs into
a registry with their signature, so the operator resolves real artifacts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

from modelplane.local.processes import die_with_parent, free_port
from modelplane.registry_client.client import RegistryClient
from modelplane.testing.runtime import make_mlp, save_torchscript

#: The Secret (key ``token``) serving pods download registry artifacts with.
ARTIFACT_SECRET = "modelplane-artifact-token"  # noqa: S105 (a Secret's name)

MLP_SIGNATURE = {
    "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 64]}],
    "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 10]}],
}


def register_mlp(
    client: RegistryClient, workdir: Path, name: str, seeds: list[int]
) -> dict[int, torch.nn.Module]:
    """Create model ``name`` with one version per seed (TorchScript MLPs); returns version → module."""
    client.create_model(name, description="e2e test MLP")
    modules: dict[int, torch.nn.Module] = {}
    for seed in seeds:
        module = make_mlp(seed)
        version = client.create_version(name, framework="pytorch", signature=MLP_SIGNATURE).version
        path = save_torchscript(module, workdir / f"{name}-{version}" / "model.pt")
        client.upload_artifact(name, version, path)
        modules[version] = module
    return modules


@dataclass
class OperatorProcess:
    """``modelplane operator`` on this machine, talking to the cluster in ``kubeconfig``."""

    kubeconfig: Path
    registry_url: str
    registry_token: str
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    standalone: bool = True  # False: kopf peering (the peering resource must exist)
    health_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        """Start the process and wait until its liveness endpoint answers."""
        self.launch()
        return self.wait_healthy(timeout)

    def launch(self) -> OperatorProcess:
        """Start the process without waiting for it (crash tests kill it at any moment)."""
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "MODELPLANE_REGISTRY_TOKEN": self.registry_token,
            "PYTHONUNBUFFERED": "1",
        }
        command = [
            sys.executable, "-m", "modelplane", "operator",
            "--registry-url", self.registry_url,
            *(["--standalone"] if self.standalone else []),
            "--health-port", str(self.health_port),
            "--metrics-port", str(self.metrics_port),
            *self.extra_args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
        return self

    def wait_healthy(self, timeout: float = 60.0) -> OperatorProcess:
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"the operator did not become healthy in {timeout}s:\n{self.log_tail()}")

    def healthy(self) -> bool:
        """Whether the liveness endpoint answers 200 right now."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples (matching ``labels``) from the operator's /metrics."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
