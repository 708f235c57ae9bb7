"""The statistics counters and their two wire forms (Triton's JSON and its protobuf)."""

from __future__ import annotations

from google.protobuf import json_format

from modelplane.serving.runtime.statistics import (
    Execution,
    ModelStatistics,
    model_statistics_json,
    model_statistics_proto,
)


def recorded() -> ModelStatistics:
    stats = ModelStatistics()
    # Two requests (1 and 3 rows) ran as one batch of 4; a third request failed alone.
    for wait in (0.001, 0.002):
        stats.queued(wait)
    stats.executed(
        Execution(batch_size=4, inferences=4, input_ns=10, infer_ns=1000, output_ns=20, requests=2)
    )
    stats.request_succeeded(total_ns=5000, input_ns=300, output_ns=200)
    stats.request_succeeded(total_ns=6000, input_ns=400, output_ns=100)
    stats.executed(Execution(batch_size=1, inferences=0, input_ns=0, infer_ns=500, output_ns=0))
    stats.request_failed(total_ns=700)
    return stats


def test_request_figures_count_per_request_and_batch_figures_per_batch() -> None:
    stats = recorded()
    assert (stats.inference_count, stats.execution_count) == (4, 2)
    assert (stats.success.count, stats.success.ns) == (2, 11000)
    assert (stats.fail.count, stats.fail.ns) == (1, 700)
    assert (stats.queue.count, stats.queue.ns) == (2, 3_000_000)
    # Both requests of the batch of 4 spent its forward; the failed one its own.
    assert (stats.compute_infer.count, stats.compute_infer.ns) == (3, 2500)
    assert stats.batches[4].compute_infer.count == 1
    assert (stats.batches[4].compute_input.ns, stats.batches[4].compute_output.ns) == (10, 20)
    assert stats.last_inference_ms > 0


def test_the_json_form_uses_tritons_fields_and_the_proto_says_the_same() -> None:
    stats = recorded()
    doc = model_statistics_json([("m", 3, stats)])
    (entry,) = doc["model_stats"]
    assert set(entry) == {
        "name",
        "version",
        "last_inference",
        "inference_count",
        "execution_count",
        "inference_stats",
        "batch_stats",
    }
    assert (entry["name"], entry["version"]) == ("m", "3")
    assert set(entry["inference_stats"]) == {
        "success",
        "fail",
        "queue",
        "compute_input",
        "compute_infer",
        "compute_output",
        "cache_hit",
        "cache_miss",
    }
    assert [b["batch_size"] for b in entry["batch_stats"]] == [1, 4]
    proto = model_statistics_proto([("m", 3, stats)])
    as_dict = json_format.MessageToDict(
        proto, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    (from_proto,) = as_dict["model_stats"]
    # Fields of newer Triton releases the runtime does not fill stay empty.
    assert (from_proto.pop("memory_usage"), from_proto.pop("response_stats")) == ([], {})

    def ints(value: object) -> object:
        if isinstance(value, dict):
            return {k: ints(v) for k, v in value.items()}
        if isinstance(value, list):
            return [ints(v) for v in value]
        return int(value) if isinstance(value, str) and value.isdigit() else value

    assert ints(from_proto) == ints(entry)
