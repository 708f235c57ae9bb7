"""One autoscaling step against an in-memory API: when it writes the scale, the Event and the status.

The decision itself is tested in test_autoscaler_decide.py; these check the loop around it. Time is
the ``now`` passed to ``step`` (monotonic seconds), never the wall clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from modelplane.api.labels import DEPLOYMENT_LABEL, ROLE_LABEL
from modelplane.autoscaling.load import ModelLoad
from modelplane.kube import Manifest
from modelplane.operator.autoscaler.loop import Autoscaler, count_pods
from modelplane.operator.autoscaler.scrape import LoadCache
from modelplane.testing.fake_kube import FakeKube, Write

NS, NAME = "team-a", "iris"
MD = ("modelplane.io/v1alpha1", "ModelDeployment")
NOW = 1000.0


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def loads() -> LoadCache:
    return LoadCache(urls=[], updated=NOW)


@pytest.fixture
def autoscaler(kube: FakeKube, loads: LoadCache) -> Autoscaler:
    return Autoscaler(NS, NAME, kube, loads)


def model_deployment(kube: FakeKube, replicas: int = 1, **autoscaling: Any) -> None:
    kube.put(
        {
            "apiVersion": MD[0],
            "kind": MD[1],
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {
                "model": {"name": NAME, "version": 3},
                "replicas": replicas,
                "autoscaling": {"mode": "builtin", "targetConcurrency": 4, **autoscaling},
            },
        }
    )


def pod(name: str, ready: bool = True, unschedulable: bool = False, role: str = "stable") -> Manifest:
    if unschedulable:
        conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
    else:
        conditions = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True" if ready else "False"},
        ]
    labels = {DEPLOYMENT_LABEL: NAME, ROLE_LABEL: role}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "status": {"conditions": conditions},
    }


def load(cache: LoadCache, concurrency: float = 0.0, queued: float = 0.0) -> None:
    cache.loads = {f"{NS}/{NAME}": ModelLoad(queued=queued, average=concurrency)}
    cache.updated = NOW


def spec_replicas(kube: FakeKube) -> int:
    body = kube.stored(*MD, NS, NAME)
    assert body is not None
    replicas: int = body["spec"]["replicas"]
    return replicas


def autoscaler_status(kube: FakeKube) -> dict[str, Any]:
    body = kube.stored(*MD, NS, NAME)
    assert body is not None
    found: dict[str, Any] = body.get("status", {}).get("autoscaler", {})
    return found


async def test_without_fresh_metrics_nothing_is_written(
    kube: FakeKube, loads: LoadCache, autoscaler: Autoscaler
) -> None:
    model_deployment(kube)
    kube.put(pod("p1"))
    load(loads, concurrency=40)
    loads.updated = NOW - 60  # the routers' metrics stopped coming: not the same as no traffic

    assert await autoscaler.step(NOW) is None
    assert kube.log == []


async def test_load_above_target_scales_up_through_the_scale_subresource(
    kube: FakeKube, loads: LoadCache, autoscaler: Autoscaler
) -> None:
    model_deployment(kube)
    kube.put(pod("p1"))
    load(loads, concurrency=12)  # three replicas' worth at 4 per replica

    decision = await autoscaler.step(NOW)

    assert decision is not None
    assert decision.desired == 3
    assert spec_replicas(kube) == 3
    assert kube.log[0] == Write("patch_merge", "ModelDeployment", NAME)
    scaled = [e for e in kube.events if e["reason"] == "Scaled"]
    assert [e["message"] for e in scaled] == [f"replicas 1 -> 3: {decision.reason}"]
    assert scaled[0]["source"] == {"component": "modelplane-autoscaler"}
    reported = autoscaler_status(kube)
    assert reported["desiredReplicas"] == 3
    assert reported["observedConcurrency"] == 12.0
    assert reported["lastScaleReason"] == decision.reason
    assert "lastScaleTime" in reported


async def test_an_unchanged_decision_writes_nothing_the_second_time(
    kube: FakeKube, loads: LoadCache, autoscaler: Autoscaler
) -> None:
    model_deployment(kube, replicas=2)
    kube.put(pod("p1"))
    kube.put(pod("p2"))
    load(loads, concurrency=8)  # exactly two replicas' worth

    first = await autoscaler.step(NOW)
    assert first is not None
    assert first.desired == 2
    assert [w.method for w in kube.log] == ["patch_status"]  # the decision, no scale
    assert kube.events == []
    writes = list(kube.log)

    load(loads, concurrency=8)
    await autoscaler.step(NOW + 1)

    assert kube.log == writes


@pytest.mark.parametrize("mode", ["hpa", "none"])
async def test_other_modes_are_left_to_their_owner(
    kube: FakeKube, loads: LoadCache, autoscaler: Autoscaler, mode: str
) -> None:
    model_deployment(kube, mode=mode)
    kube.put(pod("p1"))
    load(loads, concurrency=40)

    assert await autoscaler.step(NOW) is None
    assert kube.log == []


@pytest.mark.parametrize(("queued", "woken"), [(1.0, 1), (0.0, 0)])
async def test_a_queued_request_wakes_a_deployment_scaled_to_zero(
    kube: FakeKube, loads: LoadCache, autoscaler: Autoscaler, queued: float, woken: int
) -> None:
    # No grace period: without the queued request it would stay at zero.
    model_deployment(kube, replicas=0, minReplicas=0, scaleToZeroGracePeriodSeconds=0)
    load(loads, queued=queued)

    decision = await autoscaler.step(NOW)

    assert decision is not None
    assert decision.desired == woken
    assert spec_replicas(kube) == woken
    scaled = [e["message"] for e in kube.events if e["reason"] == "Scaled"]
    assert scaled == ([f"replicas 0 -> 1: {decision.reason}"] if woken else [])


async def test_pods_waiting_for_a_gpu_hold_the_scale(
    kube: FakeKube, loads: LoadCache, autoscaler: Autoscaler
) -> None:
    model_deployment(kube, replicas=2)
    kube.put(pod("p1"))
    kube.put(pod("p2", unschedulable=True))
    load(loads, concurrency=40)

    decision = await autoscaler.step(NOW)

    assert decision is not None
    assert decision.desired == 2
    assert spec_replicas(kube) == 2
    assert [w.method for w in kube.log] == ["patch_status"]


async def test_only_the_stable_pods_are_capacity(
    kube: FakeKube, loads: LoadCache, autoscaler: Autoscaler
) -> None:
    model_deployment(kube, replicas=1)
    kube.put(pod("p1"))
    kube.put(pod("canary-1", unschedulable=True, role="canary"))
    load(loads, concurrency=12)

    decision = await autoscaler.step(NOW)

    assert decision is not None
    assert decision.desired == 3  # a pending canary pod would have held the stable scale at 1


async def test_a_deleted_or_deleting_model_deployment_is_not_scaled(
    kube: FakeKube, loads: LoadCache, autoscaler: Autoscaler
) -> None:
    load(loads, concurrency=40)
    assert await autoscaler.step(NOW) is None
    model_deployment(kube)
    body = kube.stored(*MD, NS, NAME)
    assert body is not None
    body["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    kube.put(body)

    assert await autoscaler.step(NOW) is None
    assert kube.log == []


def test_count_pods_classifies_ready_starting_unschedulable_and_terminating() -> None:
    terminating = pod("old")
    terminating["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    just_created: Manifest = {"metadata": {"name": "new"}}  # no status yet

    counts = count_pods(
        [pod("a"), pod("b"), pod("c", ready=False), just_created, pod("d", unschedulable=True), terminating]
    )

    assert (counts.ready, counts.starting, counts.unschedulable) == (2, 2, 1)
