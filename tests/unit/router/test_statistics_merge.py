"""A model's statistics summed over its pods: the merge is a pure function of their answers."""

from __future__ import annotations

from typing import Any

import pytest

from modelplane.serving.router.statistics import StatisticsFormatError, merge_model_stats


def duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def batch(size: int, count: int) -> dict[str, Any]:
    """A batch size's figures, as :func:`entry` writes them for ``count`` batches."""
    return {
        "batch_size": size,
        "compute_input": duration(count, size * count),
        "compute_infer": duration(count, 10 * size * count),
        "compute_output": duration(count, 2 * size * count),
    }


def entry(version: str, n: int, last: int, batches: dict[int, int], name: str = "served") -> dict[str, Any]:
    """A pod's entry for ``n`` requests of one row each (Triton's JSON form, as the runtime writes it)."""
    return {
        "name": name,
        "version": version,
        "last_inference": last,
        "inference_count": n,
        "execution_count": sum(batches.values()),
        "inference_stats": {
            "success": duration(n, 100 * n),
            "fail": duration(0, 0),
            "queue": duration(n, 10 * n),
            "compute_input": duration(n, 5 * n),
            "compute_infer": duration(n, 50 * n),
            "compute_output": duration(n, 7 * n),
            "cache_hit": duration(0, 0),
            "cache_miss": duration(0, 0),
        },
        "batch_stats": [batch(size, count) for size, count in sorted(batches.items())],
    }


def test_two_pods_are_summed_per_version_and_named_as_the_client_named_the_model() -> None:
    pod_a = {"model_stats": [entry("1", 3, 1_000, {1: 1, 2: 1})]}
    pod_b = {"model_stats": [entry("1", 5, 2_000, {1: 1, 4: 1})]}
    (merged,) = merge_model_stats("iris", [pod_a, pod_b])["model_stats"]
    assert (merged["name"], merged["version"]) == ("iris", "1")
    assert merged["inference_count"] == 8
    assert merged["execution_count"] == 4
    assert merged["last_inference"] == 2_000  # the latest, not a sum
    stats = merged["inference_stats"]
    assert stats["success"] == duration(8, 800)
    assert stats["queue"] == duration(8, 80)
    assert stats["compute_output"] == duration(8, 56)
    assert stats["fail"] == duration(0, 0)
    assert stats["cache_hit"] == duration(0, 0)
    assert merged["batch_stats"] == [batch(1, 2), batch(2, 1), batch(4, 1)]  # per batch size, in order
    assert "memory_usage" not in merged  # not reported by any pod: not invented
    assert "response_stats" not in merged


def test_versions_stay_apart_in_version_order() -> None:
    answers = [
        {"model_stats": [entry("10", 1, 5, {1: 1})]},
        {"model_stats": [entry("2", 2, 7, {1: 2})]},
        {"model_stats": [entry("10", 4, 3, {1: 4})]},
    ]
    merged = merge_model_stats("iris", answers)["model_stats"]
    assert [(m["version"], m["inference_count"], m["last_inference"]) for m in merged] == [
        ("2", 2, 7),
        ("10", 5, 5),
    ]


def test_one_pod_alone_is_given_back_unchanged_but_for_the_name() -> None:
    pod = entry("1", 3, 9, {1: 3})
    (merged,) = merge_model_stats("iris", [{"model_stats": [pod]}])["model_stats"]
    assert merged == {**pod, "name": "iris"}


def test_no_pod_entries_is_an_empty_list() -> None:
    assert merge_model_stats("iris", []) == {"model_stats": []}
    assert merge_model_stats("iris", [{"model_stats": []}]) == {"model_stats": []}


def test_figures_one_pod_lacks_count_as_zero_and_protobuf_strings_are_read() -> None:
    sparse = {
        "model_stats": [
            {"version": "1", "inference_count": "4", "inference_stats": {"success": {"count": "4"}}}
        ]
    }
    (merged,) = merge_model_stats("iris", [sparse, {"model_stats": [entry("1", 1, 3, {1: 1})]}])[
        "model_stats"
    ]
    assert merged["inference_count"] == 5
    assert merged["execution_count"] == 1
    assert merged["inference_stats"]["success"] == duration(5, 100)
    assert merged["inference_stats"]["queue"] == duration(1, 10)


def test_response_stats_and_memory_usage_from_triton_pods_are_summed_by_key() -> None:
    def triton(n: int, gpu_bytes: int) -> dict[str, Any]:
        doc = entry("1", n, n, {1: n})
        doc["response_stats"] = {"0": {"success": duration(n, n), "fail": duration(0, 0)}}
        doc["memory_usage"] = [{"type": "GPU", "id": 0, "byte_size": gpu_bytes}]
        return {"model_stats": [doc]}

    (merged,) = merge_model_stats("iris", [triton(2, 100), triton(3, 50)])["model_stats"]
    assert merged["response_stats"] == {"0": {"success": duration(5, 5), "fail": duration(0, 0)}}
    assert merged["memory_usage"] == [{"type": "GPU", "id": 0, "byte_size": 150}]


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        ([], "model_stats"),
        ({"model_stats": {}}, "model_stats"),
        ({"model_stats": ["x"]}, "entry must be an object"),
        ({"model_stats": [{"version": 1}]}, "version"),
        ({"model_stats": [{"version": "1", "inference_count": -1}]}, "inference_count"),
        ({"model_stats": [{"version": "1", "execution_count": True}]}, "execution_count"),
        ({"model_stats": [{"version": "1", "inference_stats": []}]}, "inference_stats"),
        ({"model_stats": [{"version": "1", "inference_stats": {"success": 3}}]}, "inference_stats.success"),
        ({"model_stats": [{"version": "1", "inference_stats": {"success": {"count": 1.5}}}]}, "count"),
        ({"model_stats": [{"version": "1", "batch_stats": {}}]}, "batch_stats"),
        ({"model_stats": [{"version": "1", "batch_stats": [{"batch_size": "x"}]}]}, "batch_size"),
        ({"model_stats": [{"version": "1", "memory_usage": [1]}]}, "memory_usage"),
        ({"model_stats": [{"version": "1", "response_stats": []}]}, "response_stats"),
    ],
)
def test_an_answer_that_is_not_triton_statistics_is_an_error_not_a_smaller_sum(
    answer: Any, complaint: str
) -> None:
    with pytest.raises(StatisticsFormatError, match=complaint):
        merge_model_stats("iris", [{"model_stats": [entry("1", 1, 1, {1: 1})]}, answer])
