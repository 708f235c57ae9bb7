"""Triton's statistics extension, read with NVIDIA's clients: the counters match what was sent."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from modelplane.testing.runtime import RuntimeProcess


def stats_of(client: httpclient.InferenceServerClient, model: str) -> dict[str, Any]:
    (entry,) = client.get_inference_statistics(model)["model_stats"]
    assert isinstance(entry, dict)
    return entry


def infer_rows(address: str, model: str, rows: int, value: float) -> int:
    """One request of ``rows`` rows filled with ``value``; its HTTP status."""
    client = httpclient.InferenceServerClient(address, network_timeout=60)
    try:
        size = 4 if model == "faulty" else 64
        inp = httpclient.InferInput("INPUT__0", [rows, size], "FP32")
        inp.set_data_from_numpy(np.full((rows, size), value, dtype=np.float32))
        client.infer(model, [inp])
        return 200
    except InferenceServerException as exc:
        return int(exc.status() or 0)
    finally:
        client.close()


def test_the_counters_match_the_requests_sent_and_their_batches(runtime_server: RuntimeProcess) -> None:
    client = httpclient.InferenceServerClient(runtime_server.http_address)
    before = stats_of(client, "mlp_batched")
    rows = [1, 2, 3, 1, 4, 1, 2, 2]  # sent at once: the 100 ms queue delay batches them
    with ThreadPoolExecutor(max_workers=len(rows)) as pool:
        statuses = list(
            pool.map(lambda n: infer_rows(runtime_server.http_address, "mlp_batched", n, 0.5), rows)
        )
    assert statuses == [200] * len(rows)
    after = stats_of(client, "mlp_batched")

    def delta(*path: str) -> int:
        a: Any = after
        b: Any = before
        for key in path:
            a, b = a[key], b[key]
        return int(a) - int(b)

    assert (after["name"], after["version"]) == ("mlp_batched", "1")
    assert delta("inference_count") == sum(rows)  # every row counts, as in Triton
    executions = delta("execution_count")
    assert 1 <= executions < len(rows)  # batched: fewer executions than requests
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert delta("inference_stats", key, "count") == len(rows), key
        assert delta("inference_stats", key, "ns") > 0, key
    assert delta("inference_stats", "fail", "count") == 0
    # Each request's time in the server covers its wait and its batch's forward.
    assert delta("inference_stats", "success", "ns") > delta("inference_stats", "queue", "ns")
    batches_after = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    batches_before = {b["batch_size"]: b["compute_infer"]["count"] for b in before["batch_stats"]}
    new_batches = {size: n - batches_before.get(size, 0) for size, n in batches_after.items()}
    assert sum(new_batches.values()) == executions
    assert sum(size * n for size, n in new_batches.items()) == sum(rows)
    assert after["last_inference"] >= before["last_inference"] > 0 or before["execution_count"] == 0


def test_failed_requests_are_counted_as_failures_with_their_time(runtime_server: RuntimeProcess) -> None:
    client = httpclient.InferenceServerClient(runtime_server.http_address)
    before = stats_of(client, "faulty")
    statuses = [infer_rows(runtime_server.http_address, "faulty", 1, v) for v in (1.0, -1.0, 2.0, -3.0)]
    assert statuses == [200, 500, 200, 500]
    after = stats_of(client, "faulty")
    fail = after["inference_stats"]["fail"]["count"] - before["inference_stats"]["fail"]["count"]
    success = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    assert (success, fail) == (2, 2)
    assert after["inference_count"] - before["inference_count"] == 2  # only the rows that got a result


def test_grpc_answers_the_same_figures_and_every_model_and_version_is_listed(
    runtime_server: RuntimeProcess,
) -> None:
    http = httpclient.InferenceServerClient(runtime_server.http_address)
    grpc = grpcclient.InferenceServerClient(runtime_server.grpc_address)
    assert infer_rows(runtime_server.http_address, "scratch", 1, 0.25) == 200
    by_http = stats_of(http, "scratch")
    by_grpc = grpc.get_inference_statistics("scratch", "1", as_json=True)["model_stats"][0]
    # protobuf's JSON writes 64-bit integers as strings and leaves out zeros.
    assert int(by_grpc["inference_count"]) == by_http["inference_count"]
    assert int(by_grpc["execution_count"]) == by_http["execution_count"]
    assert (
        int(by_grpc["inference_stats"]["success"]["count"]) == by_http["inference_stats"]["success"]["count"]
    )
    everything = http.get_inference_statistics()["model_stats"]
    assert {"mlp", "mlp_batched", "scratch", "two", "faulty"} <= {m["name"] for m in everything}
    assert "statistics" in http.get_server_metadata()["extensions"]
    assert "statistics" in grpc.get_server_metadata().extensions


@pytest.mark.parametrize("version", ["", "1"])
def test_unknown_models_and_versions_are_404_and_not_found(
    runtime_server: RuntimeProcess, version: str
) -> None:
    http = httpclient.InferenceServerClient(runtime_server.http_address)
    grpc = grpcclient.InferenceServerClient(runtime_server.grpc_address)
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        http.get_inference_statistics("nope", version)
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        grpc.get_inference_statistics("nope", version)
    with pytest.raises(InferenceServerException, match="unknown version '9'"):
        http.get_inference_statistics("mlp", "9")
