"""One reconcile against an in-memory API: what the operator writes, prunes, retries and reports.

The e2e tests run the same paths against a real API server; these pin the orchestration down in
milliseconds. ``desired_status`` is pure and is tested here without any API at all.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from modelplane.api.labels import DEPLOYMENT_LABEL, Role
from modelplane.api.v1alpha1 import ModelDeploymentSpec, ModelSource
from modelplane.kube import KubeError, Manifest
from modelplane.operator.children import OperatorSettings, Owner
from modelplane.operator.handlers import Coalescer
from modelplane.operator.reconcile import Outcome, Reconciler, Serving, desired_status
from modelplane.operator.records import Record
from modelplane.operator.status.readiness import Observation, ResolutionFailure, WorkloadState
from modelplane.resolution.resolver import ResolutionError, Resolved, ServedVersion, ServingOptions
from modelplane.testing.fake_kube import FakeKube, Write

NS, NAME = "team-a", "iris"
MD = ("modelplane.io/v1alpha1", "ModelDeployment")
DEPLOYMENT = ("apps/v1", "Deployment")
HPA = ("autoscaling/v2", "HorizontalPodAutoscaler")
SETTINGS = OperatorSettings()
GPU_SHORTAGE = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."

Reconcile = Callable[[], Awaitable[Outcome]]


class FakeResolver:
    """Resolves a reference to the version it names (3 for an alias); ``failure`` raises instead."""

    def __init__(self) -> None:
        self.failure: ResolutionError | None = None

    async def resolve(self, name: str, source: ModelSource, role: Role, options: ServingOptions) -> Resolved:
        if self.failure is not None:
            raise self.failure
        version = source.version or 3
        served = ServedVersion(role, name, version, f"http://registry/artifacts/{version}", "a" * 64, "cfg")
        return Resolved(served, f"{name} version {version}")


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
def reconcile(kube: FakeKube, resolver: FakeResolver) -> Reconcile:
    reconciler = Reconciler(kube, resolver, SETTINGS)
    return lambda: reconciler.reconcile(NS, NAME)


def model_deployment(**spec: Any) -> Manifest:
    return {
        "apiVersion": MD[0],
        "kind": MD[1],
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {"model": {"name": NAME, "version": 3}, **spec},
    }


def edit_spec(kube: FakeKube, **spec: Any) -> None:
    """What `kubectl apply` of a changed spec does."""
    body = kube.stored(*MD, NS, NAME)
    assert body is not None
    body["spec"] = {"model": {"name": NAME, "version": 3}, **spec}
    kube.put(body)


def status(kube: FakeKube) -> dict[str, Any]:
    body = kube.stored(*MD, NS, NAME)
    assert body is not None
    found: dict[str, Any] = body.get("status", {})
    return found


def condition(kube: FakeKube, kind: str) -> dict[str, Any]:
    return next(c for c in status(kube)["conditions"] if c["type"] == kind)


def roll_out(kube: FakeKube, name: str = NAME) -> None:
    """What the Deployment controller reports once every replica of ``name`` is ready."""
    deployment = kube.stored(*DEPLOYMENT, NS, name)
    assert deployment is not None
    replicas = deployment["spec"]["replicas"]
    deployment["status"] = {
        "observedGeneration": deployment["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    kube.put(deployment)


def pending_pod(message: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{NAME}-abc", "namespace": NS, "labels": {DEPLOYMENT_LABEL: NAME}},
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
            ]
        },
    }


# -- children: create, leave alone, prune ------------------------------------------------------


async def test_first_reconcile_creates_the_owned_children_and_reports_status(
    kube: FakeKube, reconcile: Reconcile
) -> None:
    uid = kube.put(model_deployment())["metadata"]["uid"]
    outcome = await reconcile()

    assert sorted(outcome.applied) == ["Deployment/iris", "PodDisruptionBudget/iris", "Service/iris"]
    for api_version, kind in (DEPLOYMENT, ("v1", "Service"), ("policy/v1", "PodDisruptionBudget")):
        child = kube.stored(api_version, kind, NS, NAME)
        assert child is not None, kind
        assert [ref["uid"] for ref in child["metadata"]["ownerReferences"]] == [uid]
    reported = status(kube)
    assert reported["observedGeneration"] == 1
    assert [c["type"] for c in reported["conditions"]] == [
        "ModelResolved",
        "Scheduled",
        "Progressing",
        "Available",
        "Ready",
    ]
    assert condition(kube, "ModelResolved")["status"] == "True"
    assert condition(kube, "Ready")["status"] == "False"
    assert reported["model"] == {"name": NAME, "version": 3, "artifactDigest": "sha256:" + "a" * 64}
    assert outcome.status_changed
    assert len(kube.events) == 5  # one per new condition, about this ModelDeployment
    assert {e["involvedObject"]["uid"] for e in kube.events} == {uid}


async def test_a_reconcile_with_nothing_changed_writes_nothing(kube: FakeKube, reconcile: Reconcile) -> None:
    kube.put(model_deployment())
    await reconcile()
    roll_out(kube)
    await reconcile()  # reports Ready: a status change
    writes, events = list(kube.log), len(kube.events)

    outcome = await reconcile()

    assert kube.log == writes
    assert len(kube.events) == events
    assert (outcome.applied, outcome.deleted, outcome.status_changed) == ([], [], False)


async def test_a_spec_change_reapplies_only_what_it_changes(kube: FakeKube, reconcile: Reconcile) -> None:
    kube.put(model_deployment())
    await reconcile()
    edit_spec(kube, replicas=2)

    outcome = await reconcile()

    assert outcome.applied == ["Deployment/iris"]
    deployment = kube.stored(*DEPLOYMENT, NS, NAME)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 2
    assert status(kube)["observedGeneration"] == 2


async def test_removing_the_canary_deletes_its_deployment_but_not_another_owners(
    kube: FakeKube, reconcile: Reconcile
) -> None:
    kube.put(model_deployment(traffic={"canary": {"version": 4, "percent": 20}}))
    await reconcile()
    assert kube.names(*DEPLOYMENT, NS) == ["iris", "iris-canary"]
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "iris-copy",
            "namespace": NS,
            "labels": {DEPLOYMENT_LABEL: NAME},
            "ownerReferences": [{"apiVersion": MD[0], "kind": MD[1], "name": NAME, "uid": "someone-else"}],
        },
        "spec": {"replicas": 1},
    }
    kube.put(foreign)
    edit_spec(kube)

    outcome = await reconcile()

    assert outcome.deleted == ["Deployment/iris-canary"]
    assert kube.names(*DEPLOYMENT, NS) == ["iris", "iris-copy"]
    assert "canary" not in status(kube)  # the merge patch removed it
    assert [t["role"] for t in status(kube)["traffic"]] == ["stable"]


async def test_the_hpa_is_pruned_when_the_mode_leaves_hpa(kube: FakeKube, reconcile: Reconcile) -> None:
    kube.put(model_deployment(autoscaling={"mode": "hpa"}))
    await reconcile()
    assert kube.names(*HPA, NS) == [NAME]
    edit_spec(kube, autoscaling={"mode": "builtin"})

    outcome = await reconcile()

    assert outcome.deleted == ["HorizontalPodAutoscaler/iris"]
    assert kube.names(*HPA, NS) == []
    assert kube.names(*DEPLOYMENT, NS) == [NAME]


async def test_a_missing_or_deleting_model_deployment_is_left_alone(
    kube: FakeKube, reconcile: Reconcile
) -> None:
    await reconcile()
    deleting = model_deployment()
    deleting["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    kube.put(deleting)

    await reconcile()

    assert kube.log == []
    assert kube.events == []


# -- resolution failures ------------------------------------------------------------------------


async def test_an_unknown_model_is_a_false_condition_and_writes_no_children(
    kube: FakeKube, resolver: FakeResolver, reconcile: Reconcile
) -> None:
    kube.put(model_deployment())
    resolver.failure = ResolutionError("ModelNotFound", "no model named iris", temporary=False)

    outcome = await reconcile()

    assert outcome.retry_after is None  # waits for a spec change
    assert outcome.applied == []
    assert {w.method for w in kube.log} == {"patch_status", "create_event"}
    resolved = condition(kube, "ModelResolved")
    assert (resolved["status"], resolved["reason"], resolved["message"]) == (
        "False",
        "ModelNotFound",
        "no model named iris",
    )
    assert condition(kube, "Ready")["reason"] == "ModelNotFound"
    warning = next(e for e in kube.events if e["reason"] == "ModelNotFound")
    assert warning["type"] == "Warning"


async def test_a_registry_outage_asks_for_a_retry_and_keeps_what_serves(
    kube: FakeKube, resolver: FakeResolver, reconcile: Reconcile
) -> None:
    kube.put(model_deployment())
    await reconcile()
    served = status(kube)["model"]
    resolver.failure = ResolutionError("RegistryUnavailable", "registry unreachable", temporary=True)

    outcome = await reconcile()

    assert outcome.retry_after == 15.0
    assert outcome.retry_reason == "registry unreachable"
    assert outcome.deleted == []
    assert kube.names(*DEPLOYMENT, NS) == [NAME]
    assert condition(kube, "ModelResolved")["status"] == "Unknown"
    assert status(kube)["model"] == served


async def test_an_invalid_spec_is_reported_without_touching_children(
    kube: FakeKube, reconcile: Reconcile
) -> None:
    kube.put(model_deployment(replicas=-1))

    outcome = await reconcile()

    assert outcome.applied == []
    assert kube.names(*DEPLOYMENT, NS) == []
    resolved = condition(kube, "ModelResolved")
    assert (resolved["status"], resolved["reason"]) == ("False", "InvalidSpec")


# -- API failures: temporary, then converging ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "code"),
    [("apply", 409), ("apply", 500), ("patch_status", 503), ("list_objects", 429), ("delete", 500)],
)
async def test_a_temporary_api_failure_propagates_and_the_next_reconcile_converges(
    kube: FakeKube, reconcile: Reconcile, method: str, code: int
) -> None:
    kube.put(model_deployment(traffic={"canary": {"version": 4, "percent": 20}}))
    await reconcile()
    edit_spec(kube, replicas=2)  # one apply, one delete (the canary) and a status patch to come
    kube.fail(method, code)

    with pytest.raises(KubeError) as raised:
        await reconcile()
    assert raised.value.status == code
    assert raised.value.temporary

    await reconcile()
    deployment = kube.stored(*DEPLOYMENT, NS, NAME)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 2
    assert kube.names(*DEPLOYMENT, NS) == [NAME]
    assert status(kube)["observedGeneration"] == 2
    converged = list(kube.log)
    await reconcile()
    assert kube.log == converged


async def test_a_forbidden_write_is_not_temporary(kube: FakeKube, reconcile: Reconcile) -> None:
    kube.put(model_deployment())
    kube.fail("apply", 403)

    with pytest.raises(KubeError) as raised:
        await reconcile()

    assert not raised.value.temporary


async def test_a_poked_reconcile_retries_api_failures_with_a_doubling_delay(
    kube: FakeKube, resolver: FakeResolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        delays.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    reconciler = Reconciler(kube, resolver, SETTINGS)
    converged = asyncio.Event()

    async def run(namespace: str, name: str) -> Outcome:
        outcome = await reconciler.reconcile(namespace, name)
        converged.set()
        return outcome

    kube.put(model_deployment())
    kube.fail("apply", 503, times=3)

    Coalescer(run).poke(NS, NAME)
    await asyncio.wait_for(converged.wait(), timeout=10)

    assert delays == [0.3, 1.0, 2.0, 4.0]
    assert kube.names(*DEPLOYMENT, NS) == [NAME]
    assert condition(kube, "ModelResolved")["status"] == "True"


# -- status from what the cluster reports ------------------------------------------------------


async def test_a_rolled_out_deployment_is_ready_and_available(kube: FakeKube, reconcile: Reconcile) -> None:
    kube.put(model_deployment(replicas=2))
    await reconcile()
    roll_out(kube)

    await reconcile()

    reported = status(kube)
    assert (reported["replicas"], reported["readyReplicas"], reported["ready"]) == (2, 2, "2/2")
    assert reported["gpus"] == 2
    assert condition(kube, "Available")["reason"] == "MinimumReplicasAvailable"
    assert condition(kube, "Ready")["status"] == "True"
    ready_event = next(e for e in kube.events if e["reason"] == "Ready")
    assert ready_event["type"] == "Normal"


async def test_pods_waiting_for_a_gpu_report_insufficient_gpu(kube: FakeKube, reconcile: Reconcile) -> None:
    kube.put(model_deployment())
    kube.put(pending_pod(GPU_SHORTAGE))

    await reconcile()

    scheduled = condition(kube, "Scheduled")
    assert (scheduled["status"], scheduled["reason"], scheduled["message"]) == (
        "False",
        "InsufficientGPU",
        GPU_SHORTAGE,
    )
    assert condition(kube, "Ready")["reason"] == "InsufficientGPU"


async def test_writes_are_logged_in_order(kube: FakeKube, reconcile: Reconcile) -> None:
    kube.put(model_deployment())

    await reconcile()

    writes = [w for w in kube.log if w.method != "create_event"]
    assert writes == [
        Write("apply", "Deployment", NAME),
        Write("apply", "Service", NAME),
        Write("apply", "PodDisruptionBudget", NAME),
        Write("patch_status", "ModelDeployment", NAME),
    ]


# -- desired_status: pure --------------------------------------------------------------------------

OWNER = Owner(name=NAME, namespace=NS, uid="uid-1")
NOW, EARLIER = "2024-05-01T12:00:00Z", "2024-05-01T11:00:00Z"
SETTLED = WorkloadState(
    generation=1,
    observed_generation=1,
    replicas=2,
    updated_replicas=2,
    ready_replicas=2,
    available_replicas=2,
)


def resolved(role: Role, version: int) -> Resolved:
    served = ServedVersion(role, NAME, version, f"http://registry/artifacts/{version}", None, "cfg")
    return Resolved(served, f"{NAME} version {version}")


def serving(
    stable: Resolved | None = None, others: dict[Role, Resolved] | None = None, **spec: Any
) -> Serving:
    model_spec = ModelDeploymentSpec.model_validate({"model": {"name": NAME, "version": 3}, **spec})
    return Serving(OWNER, model_spec, SETTINGS, stable, others or {})


def observed(**fields: Any) -> Observation:
    values: dict[str, Any] = {
        "generation": 4,
        "desired_replicas": 2,
        "resolved": "iris version 3",
        "workload": SETTLED,
        **fields,
    }
    return Observation(**values)


def test_desired_status_reports_replicas_model_traffic_and_conditions() -> None:
    found = desired_status(observed(), {}, NOW, serving(resolved("stable", 3), replicas=2))

    conditions = found.pop("conditions")
    assert found == {
        "replicas": 2,
        "readyReplicas": 2,
        "ready": "2/2",
        "selector": "modelplane.io/deployment=iris,modelplane.io/role=stable",
        "gpus": 2,
        "url": "http://iris.team-a.svc.cluster.local:8000",
        "model": {"name": NAME, "version": 3},
        "traffic": [{"role": "stable", "version": 3, "percent": 100}],
        "observedGeneration": 4,
    }
    assert {c["type"]: c["status"] for c in conditions}["Ready"] == "True"
    assert all(c["lastTransitionTime"] == NOW and c["observedGeneration"] == 4 for c in conditions)


def test_desired_status_splits_traffic_between_stable_canary_and_shadow() -> None:
    traffic = {"canary": {"version": 4, "percent": 20}, "shadow": {"version": 5, "percent": 10}}
    others: dict[Role, Resolved] = {"canary": resolved("canary", 4), "shadow": resolved("shadow", 5)}

    found = desired_status(observed(), {}, NOW, serving(resolved("stable", 3), others, traffic=traffic))

    assert found["traffic"] == [
        {"role": "stable", "version": 3, "percent": 80},
        {"role": "canary", "version": 4, "percent": 20},
        {"role": "shadow", "version": 5, "percent": 10},
    ]
    assert found["canary"] == {"name": NAME, "version": 4}
    assert found["shadow"] == {"name": NAME, "version": 5}


def test_desired_status_deletes_versions_that_no_longer_serve() -> None:
    old = {"model": {"name": NAME, "version": 3}, "canary": {"name": NAME, "version": 4}, "shadow": {}}

    found = desired_status(observed(), old, NOW, serving(resolved("stable", 3)))

    assert (found["canary"], found["shadow"]) == (None, None)  # null in a merge patch removes it


def test_desired_status_keeps_the_serving_model_while_resolution_fails() -> None:
    old = {"model": {"name": NAME, "version": 3}}
    failure = ResolutionFailure("RegistryUnavailable", "down", temporary=True)

    found = desired_status(observed(resolved=None, resolution_failure=failure), old, NOW, serving())

    assert found["model"] == old["model"]
    assert found["traffic"] == []


def test_desired_status_of_an_invalid_spec_has_only_conditions() -> None:
    invalid = ResolutionFailure("InvalidSpec", "the spec does not validate")
    old = {"model": {"name": NAME, "version": 3}, "replicas": 2}

    found = desired_status(
        Observation(generation=5, desired_replicas=0, resolution_failure=invalid), old, NOW
    )

    assert sorted(found) == ["conditions", "model", "observedGeneration"]
    assert found["model"] is None
    assert found["conditions"][0]["reason"] == "InvalidSpec"


def test_desired_status_moves_transition_times_only_for_flipped_conditions() -> None:
    before = desired_status(observed(workload=None), {}, EARLIER, serving(resolved("stable", 3)))

    after = desired_status(observed(), before, NOW, serving(resolved("stable", 3)))

    times = {c["type"]: c["lastTransitionTime"] for c in after["conditions"]}
    assert times["ModelResolved"] == EARLIER  # True before and after
    assert times["Available"] == NOW  # False -> True
    assert times["Ready"] == NOW


@pytest.mark.parametrize(
    ("recorded", "old", "expected"),
    [
        (None, {}, None),
        (set(), {}, None),
        (set(), {"registryRecords": [{"model": NAME, "version": 2}]}, []),
        (
            {Record(NAME, 4), Record(NAME, 3)},
            {},
            [{"model": NAME, "version": 3}, {"model": NAME, "version": 4}],
        ),
    ],
)
def test_desired_status_lists_the_confirmed_registry_records(
    recorded: set[Record] | None, old: dict[str, Any], expected: list[dict[str, Any]] | None
) -> None:
    found = desired_status(observed(), old, NOW, serving(resolved("stable", 3)), recorded)

    assert found.get("registryRecords") == expected


def test_desired_status_is_pure() -> None:
    old = {"model": {"name": NAME, "version": 2}, "conditions": [], "canary": {"name": NAME}}
    snapshot = copy.deepcopy(old)
    inputs = (observed(), old, NOW, serving(resolved("stable", 3)))

    assert desired_status(*inputs) == desired_status(*inputs)
    assert old == snapshot
