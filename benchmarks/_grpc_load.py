"""Closed-loop V2 gRPC load: C concurrent callers for D seconds, one ModelInfer after another.

``python benchmarks/_grpc_load.py ADDRESS CONCURRENCY SECONDS`` prints one JSON line: requests,
seconds, errors, p50_us, p99_us. Used by runtime_vs_peers.py for every peer alike.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc


def make_request() -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="INPUT__0", datatype="FP32", shape=[1, 64])
    x = np.random.default_rng(0).standard_normal((1, 64), dtype=np.float32)
    request.raw_input_contents.append(x.tobytes())
    return request


async def main(address: str, concurrency: int, seconds: float) -> None:
    request = make_request()
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(request, timeout=30)
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal errors
            while (start := time.perf_counter()) < deadline:
                try:
                    await stub.ModelInfer(request, timeout=30)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    ordered = sorted(latencies) or [0.0]
    print(
        json.dumps(
            {
                "requests": len(latencies),
                "seconds": elapsed,
                "errors": errors,
                "p50_us": ordered[len(ordered) // 2] * 1e6,
                "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
