"""System shared memory vs the message path for a 4 MiB FP32 input: tritonclient HTTP (binary tensor
data) vs HTTP + shared memory, and gRPC vs gRPC + shared memory, c=1, against one runtime.

Same host, one ``modelplane runtime`` serving two TorchScript models on 1M-float vectors: ``sum``
(the input's sum out, so the answer is 4 bytes and the figure is the input's transport) and
``large`` (sum and the vector doubled: 4 MiB back as well, in the answer or in an output region).
Every request is timed in the client from preparing its input (``set_data_from_numpy`` or
``set_shared_memory_region``: a client with new data pays one copy either way) to having its
outputs as numpy arrays. The variants run in rounds, in an order that rotates each round, so a
shared machine's drift hits every variant alike. Printed and written raw: req/s, p50, p99 per
variant and the shared memory / message ratios.

    .venv/bin/python benchmarks/shared_memory.py
    .venv/bin/python benchmarks/shared_memory.py --requests 400 --rounds 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

from modelplane.testing.runtime import (
    LARGE_ELEMENTS,
    RuntimeProcess,
    SumAndDouble,
    large_tensor_config,
    write_model,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NBYTES = LARGE_ELEMENTS * 4

SUM_CONFIG = """
name: "sum"
platform: "pytorch_libtorch"
max_batch_size: 0
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "SUM" data_type: TYPE_FP32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""


class Sum(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum().reshape(1)


class Variant:
    """One way of sending a request: a protocol, a model, shared memory or not."""

    def __init__(self, name: str, protocol: str, model: str, shared: bool, address: str) -> None:
        self.name, self.protocol, self.model, self.shared = name, protocol, model, shared
        self.lib: Any = httpclient if protocol == "http" else grpcclient
        self.client: Any = (
            httpclient.InferenceServerClient(address, network_timeout=120)
            if protocol == "http"
            else grpcclient.InferenceServerClient(address)
        )
        self.latencies: list[float] = []
        self.handles: list[Any] = []
        if shared:
            tag = f"{os.getpid()}_{name.replace('+', '_')}"
            self.in_region, self.out_region = f"in_{tag}", f"out_{tag}"
            for region in (self.in_region, self.out_region):
                handle = shm.create_shared_memory_region(region, f"/mp_bench_{region}", NBYTES)
                self.handles.append(handle)
                self.client.register_system_shared_memory(region, f"/mp_bench_{region}", NBYTES)

    def request(self, x: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        """One request for ``x``; returns its outputs as numpy arrays."""
        inp = self.lib.InferInput("INPUT__0", [LARGE_ELEMENTS], "FP32")
        if self.shared:
            shm.set_shared_memory_region(self.handles[0], [x])
            inp.set_shared_memory(self.in_region, NBYTES)
        else:
            inp.set_data_from_numpy(x)
        outputs = [self.output("SUM")]
        if self.model == "large":
            doubled = self.output("DOUBLED")
            if self.shared:
                doubled.set_shared_memory(self.out_region, NBYTES)
            outputs.append(doubled)
        result = self.client.infer(self.model, [inp], outputs=outputs)
        got = {"SUM": result.as_numpy("SUM")}
        if self.model == "large":
            got["DOUBLED"] = (
                shm.get_contents_as_numpy(self.handles[1], np.float32, [LARGE_ELEMENTS])
                if self.shared
                else result.as_numpy("DOUBLED")
            )
        return got

    def output(self, name: str) -> Any:
        if self.protocol == "http":
            return httpclient.InferRequestedOutput(name, binary_data=True)
        return grpcclient.InferRequestedOutput(name)

    def timed(self, x: np.ndarray[Any, Any], count: int) -> None:
        for _ in range(count):
            start = time.perf_counter()
            self.request(x)
            self.latencies.append(time.perf_counter() - start)

    def close(self) -> None:
        if self.shared:
            self.client.unregister_system_shared_memory(self.in_region)
            self.client.unregister_system_shared_memory(self.out_region)
            for handle in self.handles:
                shm.destroy_shared_memory_region(handle)
        self.client.close()


def summary(latencies: list[float]) -> dict[str, float]:
    ms = np.array(latencies) * 1e3
    return {
        "requests": len(latencies),
        "req_per_s": len(latencies) / float(np.sum(ms) / 1e3),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "tritonclient": version("tritonclient"),
        "gpu": "none (CPU only)",
    }


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE, check=False)
    return out.stdout.strip() or "unknown"


def git_dirty() -> bool:
    """Whether the working tree measured differs from the commit recorded."""
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=HERE,
        check=False,
    )
    return bool(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="timed requests per variant (all rounds)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds; the variants' order rotates each")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests per variant first")
    parser.add_argument("--output", type=Path, default=RESULTS / "shared_memory.json")
    args = parser.parse_args()
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        write_model(root, "sum", Sum(), SUM_CONFIG)
        write_model(root, "large", SumAndDouble(), large_tensor_config("large"))
        with RuntimeProcess(root, ("--threads", "1")) as runtime:
            addresses = {"http": runtime.http_address, "grpc": runtime.grpc_address}
            variants = [
                Variant(
                    f"{protocol}{'+shm' if shared else ''} {model}",
                    protocol,
                    model,
                    shared,
                    addresses[protocol],
                )
                for model in ("sum", "large")
                for protocol in ("http", "grpc")
                for shared in (False, True)
            ]
            try:
                x = np.random.default_rng(0).standard_normal(LARGE_ELEMENTS).astype(np.float32)
                for variant in variants:  # every variant answers right before it is timed
                    got = variant.request(x)
                    np.testing.assert_allclose(got["SUM"], [x.sum(dtype=np.float64)], rtol=1e-4)
                    if "DOUBLED" in got:
                        np.testing.assert_array_equal(got["DOUBLED"], x * 2)
                    for _ in range(args.warmup):
                        variant.request(x)
                per_round = max(1, args.requests // args.rounds)
                for r in range(args.rounds):
                    shift = r % len(variants)
                    for variant in variants[shift:] + variants[:shift]:
                        variant.timed(x, per_round)
            finally:
                for variant in variants:
                    variant.close()

    results = {v.name: summary(v.latencies) for v in variants}
    ratios: dict[str, dict[str, float]] = {}
    for model in ("sum", "large"):
        for protocol in ("http", "grpc"):
            plain, shared = results[f"{protocol} {model}"], results[f"{protocol}+shm {model}"]
            ratios[f"{protocol}+shm / {protocol} {model}"] = {
                "req_per_s": shared["req_per_s"] / plain["req_per_s"],
                "p50": shared["p50_ms"] / plain["p50_ms"],
                "p99": shared["p99_ms"] / plain["p99_ms"],
            }

    lines = [
        f"4 MiB FP32 input ({LARGE_ELEMENTS} floats), c=1, {per_round * args.rounds} requests per variant "
        f"in {args.rounds} rounds; sum: 4 bytes back, large: 4 MiB back too",
        "",
        f"{'variant':18} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}",
    ]
    lines += [
        f"{n:18} {r['req_per_s']:8.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}" for n, r in results.items()
    ]
    lines += ["", f"{'ratio':26} {'req/s':>7} {'p50':>6} {'p99':>6}"]
    lines += [f"{n:26} {r['req_per_s']:6.2f}x {r['p50']:5.2f}x {r['p99']:5.2f}x" for n, r in ratios.items()]
    elapsed = time.perf_counter() - started
    lines += ["", f"wall time {elapsed:.0f} s"]
    print("\n".join(lines))

    raw = {
        "benchmark": "shared_memory",
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "commit": git_commit(),
        "uncommitted_changes": git_dirty(),
        "machine": machine(),
        "settings": {
            "input_bytes": NBYTES,
            "concurrency": 1,
            "requests_per_variant": per_round * args.rounds,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "runtime_args": ["--threads", "1"],
        },
        "results": results,
        "ratios": ratios,
        "latencies_ms": {v.name: [round(t * 1e3, 4) for t in v.latencies] for v in variants},
        "wall_s": elapsed,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(raw, indent=2) + "\n")


if __name__ == "__main__":
    main()
