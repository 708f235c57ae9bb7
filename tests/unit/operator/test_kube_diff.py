"""Deciding whether a child needs an apply: no write when live already says everything desired says."""

from __future__ import annotations

from typing import Any

from modelplane.kube import needs_apply
from modelplane.operator.reconcile import unschedulable_messages

DESIRED: dict[str, Any] = {
    "metadata": {"name": "iris", "labels": {"a": "1"}},
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {"containers": [{"name": "runtime", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}
        },
    },
}


def test_server_defaults_and_normalized_quantities_are_not_drift() -> None:
    live = {
        "metadata": {"name": "iris", "labels": {"a": "1"}, "resourceVersion": "42", "uid": "u"},
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 600,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "runtime",
                            "imagePullPolicy": "IfNotPresent",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ]
                }
            },
        },
        "status": {"replicas": 2},
    }
    assert needs_apply(DESIRED, live) is False


def test_empty_lists_and_maps_the_server_omits_are_not_drift() -> None:
    desired = {"spec": {"tolerations": [], "nodeSelector": {}, "replicas": 1}}
    assert needs_apply(desired, {"spec": {"replicas": 1}}) is False
    assert needs_apply(desired, {"spec": {"replicas": 1, "tolerations": [{"key": "x"}]}}) is True


def test_changed_or_missing_fields_need_an_apply() -> None:
    assert needs_apply(DESIRED, None) is True
    assert needs_apply(DESIRED, {**DESIRED, "spec": {**DESIRED["spec"], "replicas": 3}}) is True
    assert needs_apply(DESIRED, {**DESIRED, "metadata": {"name": "iris", "labels": {}}}) is True
    two_containers = {
        "spec": {"template": {"spec": {"containers": [{"name": "runtime"}, {"name": "sidecar"}]}}}
    }
    assert needs_apply(
        {"spec": {"template": {"spec": {"containers": [{"name": "runtime"}]}}}}, two_containers
    )
    assert needs_apply({"flag": True}, {"flag": "true"}) is True


def test_unschedulable_messages_newest_first_and_ignoring_terminating_pods() -> None:
    def pod(message: str, at: str, deleting: bool = False) -> dict[str, Any]:
        meta = {"deletionTimestamp": "x"} if deleting else {}
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": at,
        }
        return {"metadata": meta, "status": {"conditions": [condition]}}

    scheduled = {"metadata": {}, "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}
    pods = [
        pod("old", "2026-01-01T00:00:00Z"),
        pod("new", "2026-01-02T00:00:00Z"),
        pod("gone", "2026-01-03T00:00:00Z", deleting=True),
        scheduled,
    ]
    assert unschedulable_messages(pods) == ["new", "old"]
