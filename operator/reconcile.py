"""One level-triggered reconcile of a ModelDeployment: read, resolve, apply, observe, report.

Every trigger (create, update, resume, a child's change, the periodic resync) runs the same
function, which reads the current object from the API rather than trusting the event. Children
are applied only when they differ from what is live, so a no-change reconcile writes nothing; the
status is patched only when it changed; an Event is posted for each condition that changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from modelplane.api import v1alpha1 as api
from modelplane.api.labels import DEPLOYMENT_LABEL, ROLE_LABEL, Role
from modelplane.kube import KubeClient, needs_apply
from modelplane.operator.children import (
    Manifest,
    OperatorSettings,
    Owner,
    desired_children,
    replicas_for,
    service_url,
    total_gpus,
)
from modelplane.operator.events import post_event
from modelplane.operator.records import Record, RecordError, Records, plan_records, recorded_in
from modelplane.operator.status.conditions import merge_conditions, now_rfc3339, transitions
from modelplane.operator.status.pods import pod_problems, summarize
from modelplane.operator.status.readiness import (
    Observation,
    ResolutionFailure,
    WorkloadState,
    decide_conditions,
)
from modelplane.resolution.resolver import (
    ResolutionError,
    Resolved,
    Resolver,
    ServedVersion,
    ServingOptions,
    spec_sources,
)

log = logging.getLogger("modelplane.operator")

# Kinds whose objects come and go with the spec (the Service and PDB always exist).
PRUNABLE = (("apps/v1", "Deployment"), ("autoscaling/v2", "HorizontalPodAutoscaler"))


@dataclass
class Outcome:
    """What a reconcile did; ``retry_after`` is set when a temporary failure should be retried."""

    applied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    status_changed: bool = False
    retry_after: float | None = None
    retry_reason: str = ""


def _workload_state(deployment: Manifest | None) -> WorkloadState | None:
    if deployment is None:
        return None
    status = deployment.get("status", {})
    conditions = {c.get("type"): c for c in status.get("conditions", [])}
    progressing = conditions.get("Progressing", {})
    return WorkloadState(
        generation=deployment["metadata"].get("generation", 0),
        observed_generation=status.get("observedGeneration", 0),
        replicas=status.get("replicas", 0),
        updated_replicas=status.get("updatedReplicas", 0),
        ready_replicas=status.get("readyReplicas", 0),
        available_replicas=status.get("availableReplicas", 0),
        progress_deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
    )


def unschedulable_messages(pods: list[Manifest]) -> list[str]:
    """The scheduler's messages for pods it could not place, newest first."""
    found: list[tuple[str, str]] = []
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        for condition in pod.get("status", {}).get("conditions", []):
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                found.append(
                    (condition.get("lastTransitionTime") or "", condition.get("message") or "unschedulable")
                )
    return [message for _, message in sorted(found, reverse=True)]


def _resolved_model(resolved: Resolved | None, source: api.ModelSource, name: str) -> dict[str, Any] | None:
    if resolved is None:
        return None
    served = resolved.served
    model = api.ResolvedModel(
        name=name,
        version=served.version,
        alias=source.alias,
        storage_uri=source.storage_uri,
        artifact_digest=f"sha256:{served.sha256}" if served.sha256 else None,
    )
    return model.model_dump(by_alias=True, exclude_none=True)


def _registry_served(
    spec: api.ModelDeploymentSpec, stable: Resolved | None, others: dict[Role, Resolved]
) -> set[Record]:
    """The registry versions this ModelDeployment serves now (direct URIs have no record)."""
    served: set[Record] = set()
    pairs: list[tuple[api.ModelSource | None, Resolved | None]] = [
        (spec.model, stable),
        (spec.traffic.canary, others.get("canary")),
        (spec.traffic.shadow, others.get("shadow")),
    ]
    for source, resolved in pairs:
        direct = source is None or source.storage_uri is not None
        if not direct and resolved is not None and resolved.served.version is not None:
            served.add(Record(spec.model.name, resolved.served.version))
    return served


@dataclass(frozen=True)
class Serving:
    """A valid spec and what its model references resolved to: the inputs of the status's
    replica, URL, model and traffic fields (``stable`` is None when resolution failed)."""

    owner: Owner
    spec: api.ModelDeploymentSpec
    settings: OperatorSettings
    stable: Resolved | None = None
    others: Mapping[Role, Resolved] = field(default_factory=dict)


def conditions_in(status: Mapping[str, Any]) -> list[api.Condition]:
    """The conditions a status lists."""
    return [api.Condition.model_validate(c) for c in status.get("conditions", [])]


def _traffic(serving: Serving) -> list[dict[str, Any]]:
    """The traffic shares in force (none until the stable version resolved)."""
    stable, others, spec = serving.stable, serving.others, serving.spec
    if stable is None:
        return []
    canary_percent = spec.traffic.canary.percent if spec.traffic.canary and "canary" in others else 0
    shares: list[dict[str, Any]] = [
        {"role": "stable", "version": stable.served.version, "percent": 100 - canary_percent}
    ]
    if "canary" in others:
        shares.append(
            {"role": "canary", "version": others["canary"].served.version, "percent": canary_percent}
        )
    if "shadow" in others and spec.traffic.shadow is not None:
        shares.append(
            {
                "role": "shadow",
                "version": others["shadow"].served.version,
                "percent": spec.traffic.shadow.percent,
            }
        )
    return [{k: v for k, v in share.items() if v is not None} for share in shares]


def _serving_status(serving: Serving, observation: Observation, old_status: Mapping[str, Any]) -> Manifest:
    """Replicas, selector, GPUs, URL, the resolved versions and the traffic split."""
    owner, spec, workload = serving.owner, serving.spec, observation.workload
    replicas = workload.replicas if workload else 0
    ready_replicas = workload.ready_replicas if workload else 0
    status: Manifest = {
        "replicas": replicas,
        "readyReplicas": ready_replicas,
        "ready": f"{ready_replicas}/{observation.desired_replicas}",
        "selector": f"{DEPLOYMENT_LABEL}={owner.name},{ROLE_LABEL}=stable",
        "gpus": total_gpus(spec, replicas),
        "url": service_url(owner, serving.settings),
    }
    model = _resolved_model(serving.stable, spec_sources(spec.model), spec.model.name)
    if model is not None:
        status["model"] = model
    elif old_status.get("model"):
        status["model"] = old_status["model"]  # keep reporting what is still serving
    for role, resolved in serving.others.items():
        target = spec.traffic.canary if role == "canary" else spec.traffic.shadow
        assert target is not None
        status[role] = _resolved_model(resolved, target, spec.model.name)
    status["traffic"] = _traffic(serving)
    return status


def desired_status(
    observation: Observation,
    old_status: Mapping[str, Any],
    now: str,
    serving: Serving | None = None,
    recorded: set[Record] | None = None,
) -> Manifest:
    """The whole status to merge-patch onto the ModelDeployment; pure (``now`` is the clock).

    ``serving`` is None when the spec does not validate (the status then carries only the
    conditions); ``recorded`` is the registry records confirmed so far, None when none are kept.
    A key the old status has that no longer applies (``model``, ``canary``, ``shadow``) is set to
    None, which a merge patch deletes. Conditions keep their transition time unless they flip.
    """
    status = _serving_status(serving, observation, old_status) if serving is not None else {}
    if recorded is not None and (recorded or "registryRecords" in old_status):
        status["registryRecords"] = [r.as_status() for r in sorted(recorded)]
    conditions = merge_conditions(conditions_in(old_status), decide_conditions(observation), now)
    status["observedGeneration"] = observation.generation
    status["conditions"] = [c.model_dump(by_alias=True, exclude_none=True) for c in conditions]
    for stale in ("model", "canary", "shadow"):
        if stale in old_status and stale not in status:
            status[stale] = None  # merge patch: remove what no longer applies
    return status


class Reconciler:
    """Holds the clients; :meth:`reconcile` is safe to call any number of times."""

    def __init__(
        self, kube: KubeClient, resolver: Resolver, settings: OperatorSettings, records: Records | None = None
    ) -> None:
        self.kube = kube
        self.resolver = resolver
        self.settings = settings
        self.records = records  # None: no registry deployment records are kept

    async def _resolve_all(
        self, spec: api.ModelDeploymentSpec
    ) -> tuple[Resolved | None, dict[Role, Resolved], ResolutionError | None]:
        options = ServingOptions.from_spec(spec)
        try:
            stable = await self.resolver.resolve(spec.model.name, spec_sources(spec.model), "stable", options)
            others: dict[Role, Resolved] = {}
            targets: list[tuple[Role, api.TrafficTarget | None]] = [
                ("canary", spec.traffic.canary),
                ("shadow", spec.traffic.shadow),
            ]
            for role, target in targets:
                if target is not None and target.percent > 0:
                    others[role] = await self.resolver.resolve(spec.model.name, target, role, options)
            return stable, others, None
        except ResolutionError as exc:
            return None, {}, exc

    async def _apply_children(self, owner: Owner, desired: list[Manifest], outcome: Outcome) -> None:
        for child in desired:
            meta = child["metadata"]
            live = await self.kube.get(child["apiVersion"], child["kind"], owner.namespace, meta["name"])
            if live is None or needs_apply(child, live):
                await self.kube.apply(child)
                outcome.applied.append(f"{child['kind']}/{meta['name']}")
        # Prune children no longer wanted: a removed canary or shadow, an HPA after a mode change.
        for api_version, kind in PRUNABLE:
            wanted = {c["metadata"]["name"] for c in desired if c["kind"] == kind}
            selector = f"{DEPLOYMENT_LABEL}={owner.name}"
            for item in await self.kube.list_objects(api_version, kind, owner.namespace, selector):
                name = item["metadata"]["name"]
                owned = any(
                    ref.get("uid") == owner.uid for ref in item["metadata"].get("ownerReferences", [])
                )
                if owned and name not in wanted:
                    await self.kube.delete(api_version, kind, owner.namespace, name)
                    outcome.deleted.append(f"{kind}/{name}")

    async def reconcile(self, namespace: str, name: str) -> Outcome:
        outcome = Outcome()
        body = await self.kube.get(api.API_VERSION, api.KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return outcome
        meta = body["metadata"]
        owner = Owner(name=name, namespace=namespace, uid=meta["uid"])
        generation = int(meta.get("generation", 1))
        old_status = body.get("status") or {}

        try:
            spec = api.ModelDeploymentSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            invalid = ResolutionFailure("InvalidSpec", f"the spec does not validate: {exc}")
            observation = Observation(generation=generation, desired_replicas=0, resolution_failure=invalid)
            await self._report(body, owner, desired_status(observation, old_status, now_rfc3339()), outcome)
            return outcome

        stable, others, error = await self._resolve_all(spec)
        failure: ResolutionFailure | None = None
        if error is not None:
            failure = ResolutionFailure(error.reason, error.message, error.temporary)
            if error.temporary:
                outcome.retry_after, outcome.retry_reason = 15.0, error.message
        elif stable is not None:
            served_others: list[ServedVersion] = [r.served for r in others.values()]
            await self._apply_children(
                owner, desired_children(owner, spec, stable.served, served_others, self.settings), outcome
            )

        observation = await self._observe(owner, spec, generation, stable, failure)
        recorded: set[Record] | None = None
        if self.records is not None:
            serving_now = _registry_served(spec, stable, others)
            recorded = await self._sync_records(
                owner, observation, serving_now, recorded_in(old_status), outcome
            )
        serving = Serving(owner, spec, self.settings, stable, others)
        status = desired_status(observation, old_status, now_rfc3339(), serving, recorded)
        await self._report(body, owner, status, outcome)
        return outcome

    async def _observe(
        self,
        owner: Owner,
        spec: api.ModelDeploymentSpec,
        generation: int,
        stable: Resolved | None,
        failure: ResolutionFailure | None,
    ) -> Observation:
        """Read the stable Deployment and the pods: what the condition policies judge."""
        live_stable = await self.kube.get("apps/v1", "Deployment", owner.namespace, owner.name)
        pods = await self.kube.list_objects("v1", "Pod", owner.namespace, f"{DEPLOYMENT_LABEL}={owner.name}")
        return Observation(
            generation=generation,
            desired_replicas=replicas_for(spec, "stable"),
            resolved=stable.description if stable else None,
            resolution_failure=failure,
            workload=_workload_state(live_stable),
            unschedulable=unschedulable_messages(pods),
            pod_problem=summarize(pod_problems(pods, datetime.now(UTC))),
        )

    async def _sync_records(
        self,
        owner: Owner,
        observation: Observation,
        serving: set[Record],
        recorded: set[Record],
        outcome: Outcome,
    ) -> set[Record]:
        """Tell the registry what serves once Ready; returns the records the registry confirmed."""
        assert self.records is not None
        ready = decide_conditions(observation)[-1].status == "True"
        plan = plan_records(ready, serving, recorded)
        confirmed = set(recorded)
        try:
            for record in plan.report:
                await self.records.report(record, owner.namespace, owner.name)
                confirmed.add(record)
            for record in plan.remove:
                await self.records.remove(record, owner.namespace, owner.name)
                confirmed.discard(record)
        except RecordError as exc:
            log.warning("%s/%s: %s", owner.namespace, owner.name, exc)
            if exc.temporary and outcome.retry_after is None:
                outcome.retry_after, outcome.retry_reason = 15.0, str(exc)
        return confirmed

    async def _report(self, body: Manifest, owner: Owner, status: Manifest, outcome: Outcome) -> None:
        """Patch ``status`` only if it changes something, and post an Event per changed condition."""
        old_status = body.get("status") or {}
        if any(old_status.get(key) != value for key, value in status.items()):
            await self.kube.patch_status(api.API_VERSION, api.KIND, owner.namespace, owner.name, status)
            outcome.status_changed = True
        for changed in transitions(conditions_in(old_status), conditions_in(status)):
            await self._event(body, changed)

    async def _event(self, body: Manifest, condition: api.Condition) -> None:
        healthy = condition.status == "True" or (
            condition.type == "Progressing" and condition.reason == "Complete"
        )
        await post_event(
            self.kube,
            body,
            "Normal" if healthy else "Warning",
            condition.reason or condition.type,
            f"{condition.type}={condition.status}: {condition.message}",
            self.kube.field_manager,
        )
