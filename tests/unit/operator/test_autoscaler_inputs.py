"""The autoscaler's inputs: load summed over routers, and pods classified as capacity or not."""

from __future__ import annotations

from modelplane.operator.autoscaler.loop import count_pods
from modelplane.operator.autoscaler.metrics import parse_router_metrics

ROUTER_A = """# HELP modelplane_router_in_flight_requests In flight
# TYPE modelplane_router_in_flight_requests gauge
modelplane_router_in_flight_requests{model="team/iris"} 5.0
modelplane_router_in_flight_requests{model="team/other"} 1.0
# HELP modelplane_router_queued_requests Queued
# TYPE modelplane_router_queued_requests gauge
modelplane_router_queued_requests{model="team/iris"} 2.0
"""
ROUTER_B = """# TYPE modelplane_router_in_flight_requests gauge
modelplane_router_in_flight_requests{model="team/iris"} 3.0
# TYPE modelplane_router_requests_total counter
modelplane_router_requests_total{model="team/iris",version="3",code="200"} 100.0
"""


def test_load_is_summed_over_routers_per_model() -> None:
    loads = parse_router_metrics([ROUTER_A, ROUTER_B])
    assert loads["team/iris"].in_flight == 8.0
    assert loads["team/iris"].queued == 2.0
    assert loads["team/iris"].concurrency == 10.0
    assert loads["team/other"].concurrency == 1.0


def test_no_routers_means_no_load() -> None:
    assert parse_router_metrics([]) == {}


def _pod(ready: bool = False, unschedulable: bool = False, deleting: bool = False) -> dict[str, object]:
    conditions = []
    if unschedulable:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable"})
    else:
        conditions.append({"type": "PodScheduled", "status": "True"})
        conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    return {"metadata": {"deletionTimestamp": "x"} if deleting else {}, "status": {"conditions": conditions}}


def test_pods_waiting_for_a_gpu_are_not_capacity_and_terminating_pods_do_not_count() -> None:
    counts = count_pods(
        [
            _pod(ready=True),
            _pod(ready=True),
            _pod(),
            _pod(unschedulable=True),
            _pod(ready=True, deleting=True),
        ]
    )
    assert (counts.ready, counts.starting, counts.unschedulable) == (2, 1, 1)
