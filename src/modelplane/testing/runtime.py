"""Helpers for tests that serve real torch models: model builders, a Triton-layout repository
writer and the ``modelplane runtime`` server as a real subprocess on free loopback ports.

Shared by the runtime's own tests and by the router's and operator's tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

from modelplane.local.processes import die_with_parent, free_port

MLP_CONFIG = """
name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ 64 ] }} ]
output [ {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 10 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
{extra}
"""

TWO_INPUT_CONFIG = """
name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 8
input [
  {{ name: "X" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "SCALE" data_type: TYPE_INT64 dims: [ 1 ] }}
]
output [
  {{ name: "SUM" data_type: TYPE_FP32 dims: [ 1 ] }},
  {{ name: "SCALED" data_type: TYPE_FP32 dims: [ -1 ] }}
]
dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
"""

#: Elements of the large-tensor model's input in the shared memory tests and benchmark (4 MiB of FP32).
LARGE_ELEMENTS = 1 << 20

LARGE_TENSOR_CONFIG = """
name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 0
input [ {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [
  {{ name: "SUM" data_type: TYPE_FP32 dims: [ 1 ] }},
  {{ name: "DOUBLED" data_type: TYPE_FP32 dims: [ -1 ] }}
]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""


class Mlp(torch.nn.Module):
    """64 -> 256 -> 256 -> 10, the runtime's reference model (and the benchmark's)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(64, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


GATE_ENV = "MODELPLANE_TEST_GATE"
GATED_MLP_CLASS = "modelplane.testing.runtime:GatedMlp"


class GatedMlp(Mlp):
    """:class:`Mlp` whose forward waits while the file named by ``$MODELPLANE_TEST_GATE`` exists.

    Holds requests in flight for as long as a test needs (a drain, a shutdown), with no timing
    guess: the test creates the file, sends its requests, and removes it to let them finish. A
    forward waits at most a minute, so a test that forgets the file cannot hang a server forever.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = os.environ.get(GATE_ENV)
        deadline = time.monotonic() + 60
        while gate and Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return super().forward(x)


def write_gated_mlp(repository: Path, name: str, model: torch.nn.Module, max_batch_size: int = 64) -> Path:
    """``NAME/config.pbtxt`` and ``NAME/1/model.pth``: ``model``'s weights served by :class:`GatedMlp`."""
    folder = repository / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    extra = f'parameters {{ key: "module_class" value {{ string_value: "{GATED_MLP_CLASS}" }} }}'
    (folder / "config.pbtxt").write_text(mlp_config(name, max_batch_size=max_batch_size, extra=extra))
    path = folder / "1" / "model.pth"
    torch.save(model.state_dict(), path)
    return path


class TwoInputs(torch.nn.Module):
    """Two inputs with a variable dim and two outputs: row sums, and rows times an integer scale."""

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.sum(dim=1, keepdim=True), x * scale.to(x.dtype)


class SumAndDouble(torch.nn.Module):
    """One vector of any length in; its sum and the vector doubled out (large-tensor transport)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.sum().reshape(1), x * 2.0


class FailsOnNegative(torch.nn.Module):
    """Raises when any input is negative: shows one bad request failing alone inside a batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise ValueError("negative input")
        return x * 2.0


def make_mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return Mlp().eval()


def save_torchscript(module: torch.nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # TorchScript is what Triton's PyTorch backend serves; keep it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(path))  # type: ignore[no-untyped-call]
    return path


def write_model(
    repository: Path,
    name: str,
    module: torch.nn.Module,
    config: str,
    version: int = 1,
    filename: str = "model.pt",
) -> Path:
    """Write ``NAME/config.pbtxt`` and ``NAME/VERSION/model.pt`` (TorchScript) into ``repository``."""
    folder = repository / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config)
    return save_torchscript(module, folder / str(version) / filename)


def mlp_config(name: str = "mlp", max_batch_size: int = 64, delay_us: int = 500, extra: str = "") -> str:
    return MLP_CONFIG.format(name=name, max_batch_size=max_batch_size, delay_us=delay_us, extra=extra)


def two_input_config(name: str = "two") -> str:
    return TWO_INPUT_CONFIG.format(name=name)


def large_tensor_config(name: str = "large") -> str:
    """Config of :class:`SumAndDouble`: FP32 ``INPUT__0`` of any length, no batching."""
    return LARGE_TENSOR_CONFIG.format(name=name)


@dataclass
class RuntimeProcess:
    """A ``modelplane runtime`` subprocess on loopback; ``stop()`` sends SIGTERM and waits."""

    repository: Path
    extra_args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, wait_ready: bool = True, timeout_s: float = 60.0) -> RuntimeProcess:
        command = [
            str(Path(sys.executable).parent / "modelplane"),
            "runtime",
            "--model-repository",
            str(self.repository),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port),
            *self.extra_args,
        ]
        self.log_path = self.repository.parent / f"runtime-{self.http_port}.log"
        log = self.log_path.open("wb")
        env = {**os.environ, "OMP_NUM_THREADS": "1", **self.env}
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent
        )
        log.close()
        self.wait("/v2/health/ready" if wait_ready else "/v2/health/live", timeout_s)
        return self

    def wait(self, path: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the runtime exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.http_url + path, timeout=2.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"the runtime did not answer 200 on {path} within {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait for exit (kill after ``timeout_s``); returns the exit code."""
        if self.process is None:
            return 0
        self.terminate()
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise

    def __enter__(self) -> RuntimeProcess:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_runtime(repository: Path, *extra_args: str, **kwargs: object) -> Iterator[RuntimeProcess]:
    server = RuntimeProcess(repository, extra_args, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
