"""The router's per-request metrics (requests, latency, in flight): plain numbers, standard exposition."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelplane.serving.router.metrics import LATENCY_BUCKETS, RouterMetrics


def samples(metrics: RouterMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counts_latency_buckets_and_in_flight_read_as_prometheus_metrics() -> None:
    metrics = RouterMetrics()
    for code in ("200", "200", "503"):
        metrics.request_count("team/iris", "3", code).inc()
    for seconds in (0.0004, 0.0005, 0.003, 45.0):  # on a bound counts in that bucket; 45 s only in +Inf
        metrics.request_latency("team/iris").observe(seconds)
    gauge = metrics.model_in_flight("team/iris")
    gauge.inc()
    gauge.inc()
    gauge.dec()

    got = samples(metrics)
    iris = (("model", "team/iris"),)
    assert got[("modelplane_router_requests_total", (("code", "200"), *iris, ("version", "3")))] == 2
    assert got[("modelplane_router_requests_total", (("code", "503"), *iris, ("version", "3")))] == 1
    bucket = "modelplane_router_request_duration_seconds_bucket"
    assert got[(bucket, (("le", "0.0005"), *iris))] == 2
    assert got[(bucket, (("le", "0.001"), *iris))] == 2
    assert got[(bucket, (("le", "0.005"), *iris))] == 3
    assert got[(bucket, (("le", "30.0"), *iris))] == 3
    assert got[(bucket, (("le", "+Inf"), *iris))] == 4
    assert len([key for key in got if key[0] == bucket]) == len(LATENCY_BUCKETS) + 1
    assert got[("modelplane_router_request_duration_seconds_count", iris)] == 4
    assert abs(got[("modelplane_router_request_duration_seconds_sum", iris)] - 45.0039) < 1e-9
    assert got[("modelplane_router_in_flight_requests", iris)] == 1


def test_the_same_labels_update_one_series() -> None:
    metrics = RouterMetrics()
    assert metrics.request_count("iris", "1", "200") is metrics.request_count("iris", "1", "200")
    assert metrics.request_latency("iris") is metrics.request_latency("iris")
    assert metrics.model_in_flight("iris") is metrics.model_in_flight("iris")
    assert metrics.model_in_flight("iris") is not metrics.model_in_flight("other")


def test_the_router_reports_its_own_cpu_for_sizing() -> None:
    got = samples(RouterMetrics())
    assert ("process_cpu_seconds_total", ()) in got
    assert got[("process_cpu_seconds_total", ())] > 0
