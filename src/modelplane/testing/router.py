"""The router as a real process for tests and benchmarks: ``modelplane router`` on free loopback ports.

Tests reach it only over HTTP and gRPC, so they exercise what users get (uvicorn, the gRPC server,
the discovery source). ``metric()`` reads one of its Prometheus metrics.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from modelplane.local.processes import die_with_parent, free_port


def infer_body(x: np.ndarray) -> dict[str, Any]:
    """A V2 JSON inference request carrying ``x`` as the FP32 input ``INPUT__0``."""
    return {
        "inputs": [
            {"name": "INPUT__0", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
        ]
    }


def output_of(response: httpx.Response) -> np.ndarray:
    """The first output of a V2 JSON inference response, as an array of its shape."""
    output = response.json()["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def write_routes(path: Path, models: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """Write a static routes file (``models: {NAME: [{version, http, grpc, weight, shadow}]}``)."""
    path.write_text(yaml.safe_dump({"models": {name: list(entries) for name, entries in models.items()}}))
    return path


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of metric ``name`` in Prometheus text ``text`` that carry ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        sample = head.split("{", 1)[0]
        if sample != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


@dataclass
class RouterProcess:
    """``modelplane router`` in a subprocess; ``stop()`` sends SIGTERM and waits."""

    log_path: Path
    discovery: str = "static"
    routes: Path | None = None
    extra_args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout_s: float = 60.0) -> RouterProcess:
        command = [
            sys.executable, "-m", "modelplane", "router",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--grpc-port", str(self.grpc_port),
            "--discovery", self.discovery,
            *(["--routes", str(self.routes)] if self.routes is not None else []),
            *self.extra_args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the router exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop(timeout_s=5.0)  # never leave a half-started router behind
        raise RuntimeError(f"the router did not become ready in {timeout_s}s:\n{self.log_tail()}")

    def metrics_text(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=5.0).text

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples (matching ``labels``) from the router's /metrics."""
        return metric_sum(self.metrics_text(), name, **labels)

    def routable(self) -> list[dict[str, Any]]:
        """The router's ``/v2/models`` listing."""
        listing: list[dict[str, Any]] = httpx.get(self.url + "/v2/models", timeout=5.0).json()
        return listing

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait for exit (kill after ``timeout_s``); returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process is not None else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
