"""The supervisor's pure decisions: start, stop, roll, back off."""

from __future__ import annotations

from modelplane.local.plan import ReplicaView, Start, Stop, Want, plan


def test_starts_missing_replicas_on_free_slots() -> None:
    views = [ReplicaView("a", 0, "r1", "ready")]
    assert plan({"a": Want(3, "r1")}, views) == [Start("a", 1, "r1"), Start("a", 2, "r1")]


def test_scale_down_stops_not_ready_then_highest_slots() -> None:
    views = [
        ReplicaView("a", 0, "r1", "ready"),
        ReplicaView("a", 1, "r1", "starting"),
        ReplicaView("a", 2, "r1", "ready"),
    ]
    actions = plan({"a": Want(1, "r1")}, views)
    assert actions == [Stop("a", 1, "scaled down"), Stop("a", 2, "scaled down")]


def test_scale_to_zero_stops_everything() -> None:
    views = [ReplicaView("a", 0, "r1", "ready")]
    assert plan({"a": Want(0, "r1")}, views) == [Stop("a", 0, "scaled down")]


def test_removed_deployment_is_stopped() -> None:
    views = [ReplicaView("gone", 0, "r1", "ready")]
    assert plan({}, views) == [Stop("gone", 0, "the deployment was removed")]


def test_rollout_keeps_old_until_new_ready() -> None:
    old = ReplicaView("a", 0, "r1", "ready")
    assert plan({"a": Want(1, "r2")}, [old]) == [Start("a", 1, "r2")]
    starting = ReplicaView("a", 1, "r2", "starting")
    assert plan({"a": Want(1, "r2")}, [old, starting]) == []
    ready = ReplicaView("a", 1, "r2", "ready")
    assert plan({"a": Want(1, "r2")}, [old, ready]) == [Stop("a", 0, "replaced by a new revision")]


def test_exited_replica_is_replaced_after_its_backoff() -> None:
    views = [ReplicaView("a", 0, "r1", "exited")]
    blocked = {("a", 0): 10.0}
    assert plan({"a": Want(1, "r1")}, views, blocked, now=5.0) == [Stop("a", 0, "the process exited")]
    assert plan({"a": Want(1, "r1")}, [], blocked, now=11.0) == [Start("a", 0, "r1")]


def test_steady_state_does_nothing_twice() -> None:
    views = [ReplicaView("a", 0, "r1", "ready"), ReplicaView("b", 0, "r9", "starting")]
    wants = {"a": Want(1, "r1"), "b": Want(1, "r9")}
    assert plan(wants, views) == []
    assert plan(wants, views) == []
