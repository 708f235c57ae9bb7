"""Triton's statistics extension: per model version, what it served and where the time went.

NVIDIA's clients (``get_inference_statistics`` in ``tritonclient.http`` and ``tritonclient.grpc``,
``perf_analyzer``) read these; the fields and their meaning follow Triton's:

- ``success`` / ``fail``: requests answered / failed after their model was found, and the whole
  time each took in the server (count + nanoseconds);
- ``queue``: time each request waited in the batcher before its batch started;
- ``compute_input``: decoding and checking each request's inputs (the front end);
- ``compute_infer``: each request's batch forward, with the batch's assembly and split;
- ``compute_output``: encoding each request's outputs (the front end);
- ``inference_count``: inferences done, counting every row of a batched request;
  ``execution_count``: batches run; ``last_inference``: milliseconds since the epoch of the last;
- ``batch_stats``: per batch size, the batches run and their assembly (input), forward (infer) and
  split (output) times.

Request-level durations count once per request, batch-level ones once per batch, as in Triton.
Counters only grow while the version stays loaded; a reload starts from zero. The cache figures are
always zero (the runtime has no response cache). Updates come from the event loop and from the
batcher's worker threads; each is a few integer additions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tritonclient.grpc import service_pb2


@dataclass(slots=True)
class Duration:
    """Triton's ``StatisticDuration``: how many, and their summed nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += max(0, ns)

    def as_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class BatchStatistics:
    """One batch size's executions: assembly, forward, split."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(frozen=True, slots=True)
class Execution:
    """One batch the batcher ran (reported from its worker thread)."""

    batch_size: int  # rows in the batch
    inferences: int  # rows whose request got a result
    input_ns: int  # assembling the batch
    infer_ns: int  # the forward
    output_ns: int  # splitting the outputs per request
    requests: int = 1


@dataclass(slots=True)
class ModelStatistics:
    """The counters of one loaded model version."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, BatchStatistics] = field(default_factory=dict)

    def request_succeeded(self, total_ns: int, input_ns: int, output_ns: int) -> None:
        self.success.add(total_ns)
        self.compute_input.add(input_ns)
        self.compute_output.add(output_ns)

    def request_failed(self, total_ns: int) -> None:
        self.fail.add(total_ns)

    def queued(self, seconds: float) -> None:
        self.queue.add(int(seconds * 1e9))

    def executed(self, execution: Execution) -> None:
        self.execution_count += 1
        self.inference_count += execution.inferences
        self.last_inference_ms = time.time_ns() // 1_000_000
        for _ in range(execution.requests):
            self.compute_infer.add(execution.infer_ns)
        batch = self.batches.get(execution.batch_size)
        if batch is None:
            batch = self.batches[execution.batch_size] = BatchStatistics()
        batch.compute_input.add(execution.input_ns)
        batch.compute_infer.add(execution.infer_ns)
        batch.compute_output.add(execution.output_ns)


def _inference_stats(stats: ModelStatistics) -> dict[str, dict[str, int]]:
    none = Duration().as_json()
    return {
        "success": stats.success.as_json(),
        "fail": stats.fail.as_json(),
        "queue": stats.queue.as_json(),
        "compute_input": stats.compute_input.as_json(),
        "compute_infer": stats.compute_infer.as_json(),
        "compute_output": stats.compute_output.as_json(),
        "cache_hit": none,
        "cache_miss": none,
    }


def model_statistics_json(entries: list[tuple[str, int, ModelStatistics]]) -> dict[str, Any]:
    """The HTTP answer: ``{"model_stats": [...]}`` in Triton's JSON form (its field names)."""
    return {
        "model_stats": [
            {
                "name": name,
                "version": str(version),
                "last_inference": stats.last_inference_ms,
                "inference_count": stats.inference_count,
                "execution_count": stats.execution_count,
                "inference_stats": _inference_stats(stats),
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": batch.compute_input.as_json(),
                        "compute_infer": batch.compute_infer.as_json(),
                        "compute_output": batch.compute_output.as_json(),
                    }
                    for size, batch in sorted(stats.batches.items())
                ],
            }
            for name, version, stats in entries
        ]
    }


def model_statistics_proto(entries: list[tuple[str, int, ModelStatistics]]) -> Any:
    """The gRPC answer: a ``ModelStatisticsResponse`` with the same figures as the JSON one."""
    response = service_pb2.ModelStatisticsResponse()
    for doc in model_statistics_json(entries)["model_stats"]:
        entry = response.model_stats.add(
            name=doc["name"],
            version=doc["version"],
            last_inference=doc["last_inference"],
            inference_count=doc["inference_count"],
            execution_count=doc["execution_count"],
        )
        for key, value in doc["inference_stats"].items():
            getattr(entry.inference_stats, key).CopyFrom(service_pb2.StatisticDuration(**value))
        for batch in doc["batch_stats"]:
            added = entry.batch_stats.add(batch_size=batch["batch_size"])
            for key in ("compute_input", "compute_infer", "compute_output"):
                getattr(added, key).CopyFrom(service_pb2.StatisticDuration(**batch[key]))
    return response
