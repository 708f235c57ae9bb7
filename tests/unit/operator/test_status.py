"""Condition policies and bookkeeping: what `kubectl get md` and `kubectl describe` will say."""

from __future__ import annotations

from modelplane.api.v1alpha1 import Condition
from modelplane.operator.status.conditions import merge_conditions, transitions
from modelplane.operator.status.readiness import (
    Observation,
    ResolutionFailure,
    WorkloadState,
    decide_conditions,
)

SETTLED = WorkloadState(
    generation=2,
    observed_generation=2,
    replicas=2,
    updated_replicas=2,
    ready_replicas=2,
    available_replicas=2,
)


def _by_type(obs: Observation) -> dict[str, Condition]:
    return {c.type: c for c in decide_conditions(obs)}


def test_settled_deployment_is_ready() -> None:
    conditions = _by_type(
        Observation(generation=5, desired_replicas=2, resolved="iris version 3", workload=SETTLED)
    )
    assert {t: c.status for t, c in conditions.items()} == {
        "ModelResolved": "True",
        "Scheduled": "True",
        "Progressing": "False",
        "Available": "True",
        "Ready": "True",
    }
    assert conditions["Progressing"].reason == "Complete"
    assert all(c.observed_generation == 5 for c in conditions.values())


def test_gpu_shortage_is_reported_with_the_schedulers_message() -> None:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available"
    pending = WorkloadState(
        generation=1,
        observed_generation=1,
        replicas=1,
        updated_replicas=1,
        ready_replicas=0,
        available_replicas=0,
    )
    conditions = _by_type(
        Observation(
            generation=1, desired_replicas=1, resolved="iris v1", workload=pending, unschedulable=[message]
        )
    )
    assert conditions["Scheduled"].status == "False"
    assert conditions["Scheduled"].reason == "InsufficientGPU"
    assert conditions["Scheduled"].message == message
    assert conditions["Ready"].status == "False"
    assert conditions["Ready"].reason == "InsufficientGPU"


def test_other_scheduling_failures_are_not_blamed_on_gpus() -> None:
    conditions = _by_type(
        Observation(
            generation=1, desired_replicas=1, resolved="x", unschedulable=["0/2 nodes: 2 Insufficient cpu"]
        )
    )
    assert conditions["Scheduled"].reason == "Unschedulable"


def test_unknown_model_is_a_permanent_failure_and_old_replicas_keep_serving() -> None:
    failure = ResolutionFailure(reason="ModelNotFound", message="model 'nope' is not in the registry")
    conditions = _by_type(
        Observation(generation=3, desired_replicas=2, resolution_failure=failure, workload=SETTLED)
    )
    assert conditions["ModelResolved"].status == "False"
    assert conditions["ModelResolved"].reason == "ModelNotFound"
    assert conditions["Available"].status == "True"
    assert conditions["Ready"].reason == "ModelNotFound"


def test_registry_outage_is_unknown_not_false() -> None:
    failure = ResolutionFailure(reason="RegistryUnavailable", message="connection refused", temporary=True)
    conditions = _by_type(Observation(generation=1, desired_replicas=1, resolution_failure=failure))
    assert conditions["ModelResolved"].status == "Unknown"


def test_rollout_in_progress_is_progressing_and_not_ready() -> None:
    rolling = WorkloadState(
        generation=3,
        observed_generation=3,
        replicas=3,
        updated_replicas=1,
        ready_replicas=2,
        available_replicas=2,
    )
    conditions = _by_type(Observation(generation=4, desired_replicas=2, resolved="iris v4", workload=rolling))
    assert conditions["Progressing"].status == "True"
    assert conditions["Progressing"].reason == "RollingOut"
    assert conditions["Available"].status == "True"
    assert conditions["Ready"].reason == "RollingOut"


def test_scaled_to_zero_is_available_for_activation() -> None:
    idle = WorkloadState(
        generation=1,
        observed_generation=1,
        replicas=0,
        updated_replicas=0,
        ready_replicas=0,
        available_replicas=0,
    )
    conditions = _by_type(Observation(generation=1, desired_replicas=0, resolved="iris v1", workload=idle))
    assert conditions["Available"].reason == "ScaledToZero"
    assert conditions["Ready"].status == "True"


def test_transition_time_moves_only_when_status_flips() -> None:
    first = merge_conditions([], [Condition(type="Ready", status="False", reason="Creating")], now="t1")
    same_status = merge_conditions(
        first, [Condition(type="Ready", status="False", reason="Scaling")], now="t2"
    )
    flipped = merge_conditions(
        same_status, [Condition(type="Ready", status="True", reason="Ready")], now="t3"
    )
    assert first[0].last_transition_time == "t1"
    assert same_status[0].last_transition_time == "t1"
    assert same_status[0].reason == "Scaling"
    assert flipped[0].last_transition_time == "t3"


def test_conditions_owned_by_others_are_kept_and_order_is_stable() -> None:
    foreign = Condition(type="example.com/Audited", status="True", last_transition_time="t0")
    merged = merge_conditions(
        [foreign], decide_conditions(Observation(generation=1, desired_replicas=1)), now="t1"
    )
    assert [c.type for c in merged] == [
        "ModelResolved",
        "Scheduled",
        "Progressing",
        "Available",
        "Ready",
        foreign.type,
    ]
    assert merged[-1] == foreign


def test_transitions_name_each_changed_condition_once() -> None:
    before = merge_conditions([], [Condition(type="Ready", status="False", reason="Creating")], now="t1")
    after = merge_conditions(before, [Condition(type="Ready", status="True", reason="Ready")], now="t2")
    assert [c.type for c in transitions(before, after)] == ["Ready"]
    assert transitions(after, after) == []
