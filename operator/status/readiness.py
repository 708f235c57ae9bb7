"""Decide a ModelDeployment's conditions from what was observed, as a chain of small policies.

Each policy looks at one concern and returns its condition; ``Ready`` is derived from the others,
so the first condition that is not healthy explains why the deployment is not ready. Nothing here
does I/O: the operator gathers an :class:`Observation` and writes the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelplane.api.v1alpha1 import Condition
from modelplane.operator.status.pods import PodProblem


@dataclass(frozen=True)
class ResolutionFailure:
    """The model reference could not be resolved; ``temporary`` when retrying may help."""

    reason: str
    message: str
    temporary: bool = False


@dataclass(frozen=True)
class WorkloadState:
    """The observed state of the stable Deployment (its ``status`` and generation)."""

    generation: int
    observed_generation: int
    replicas: int
    updated_replicas: int
    ready_replicas: int
    available_replicas: int
    progress_deadline_exceeded: bool = False


@dataclass(frozen=True)
class Observation:
    """Everything the condition policies need, gathered by the operator."""

    generation: int
    desired_replicas: int
    resolved: str | None = None  # a human description of what was resolved, e.g. "iris version 3"
    resolution_failure: ResolutionFailure | None = None
    workload: WorkloadState | None = None
    # FailedScheduling messages of this deployment's pending pods, newest first.
    unschedulable: list[str] = field(default_factory=list)
    # What is most wrong with the serving pods (crash loops, failed downloads, ...), if anything.
    pod_problem: PodProblem | None = None


GPU_RESOURCE_MARKERS = ("nvidia.com/gpu", "nvidia.com/mig-")


def _condition(kind: str, ok: bool | None, reason: str, message: str, generation: int) -> Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return Condition(type=kind, status=status, reason=reason, message=message, observed_generation=generation)


def model_resolved(obs: Observation) -> Condition:
    if obs.resolution_failure is not None:
        failure = obs.resolution_failure
        ok = None if failure.temporary else False
        return _condition("ModelResolved", ok, failure.reason, failure.message, obs.generation)
    if obs.resolved is None:
        return _condition("ModelResolved", None, "Resolving", "resolving the model reference", obs.generation)
    return _condition("ModelResolved", True, "Resolved", obs.resolved, obs.generation)


def scheduled(obs: Observation) -> Condition:
    if obs.unschedulable:
        message = obs.unschedulable[0]
        gpu = any(marker in message for marker in GPU_RESOURCE_MARKERS)
        reason = "InsufficientGPU" if gpu else "Unschedulable"
        return _condition("Scheduled", False, reason, message, obs.generation)
    if obs.desired_replicas == 0:
        return _condition("Scheduled", True, "ScaledToZero", "no replicas to place", obs.generation)
    if obs.workload is None:
        return _condition("Scheduled", None, "Pending", "waiting for the serving pods", obs.generation)
    return _condition("Scheduled", True, "Scheduled", "every serving pod is placed on a node", obs.generation)


def progressing(obs: Observation) -> Condition:
    workload = obs.workload
    if workload is None:
        return _condition("Progressing", True, "Creating", "creating the serving workload", obs.generation)
    if workload.progress_deadline_exceeded:
        return _condition(
            "Progressing",
            False,
            "ProgressDeadlineExceeded",
            "the rollout made no progress in time",
            obs.generation,
        )
    rolling = (
        workload.observed_generation < workload.generation or workload.updated_replicas < obs.desired_replicas
    )
    if rolling:
        message = f"{workload.updated_replicas} of {obs.desired_replicas} replicas updated"
        return _condition("Progressing", True, "RollingOut", message, obs.generation)
    if workload.ready_replicas != obs.desired_replicas or workload.replicas != obs.desired_replicas:
        message = f"{workload.ready_replicas} of {obs.desired_replicas} replicas ready"
        return _condition("Progressing", True, "Scaling", message, obs.generation)
    return _condition(
        "Progressing", False, "Complete", "the serving workload matches the spec", obs.generation
    )


def available(obs: Observation) -> Condition:
    workload = obs.workload
    if obs.desired_replicas == 0:
        return _condition(
            "Available", True, "ScaledToZero", "scaled to zero; the next request activates it", obs.generation
        )
    if workload is None or workload.available_replicas == 0:
        if obs.pod_problem is not None:
            problem = obs.pod_problem
            return _condition("Available", False, problem.reason, problem.message, obs.generation)
        return _condition(
            "Available", False, "NoReadyReplicas", "no serving replica is ready", obs.generation
        )
    message = f"{workload.available_replicas} replica(s) serving"
    return _condition("Available", True, "MinimumReplicasAvailable", message, obs.generation)


def ready(parts: list[Condition], generation: int, pod_problem: PodProblem | None = None) -> Condition:
    """Ready when every other condition is healthy and no serving pod is in trouble; otherwise the
    first unhealthy one says why (a pod's trouble right after the model and the scheduling)."""
    healthy = {"ModelResolved": "True", "Scheduled": "True", "Available": "True"}
    for condition in parts:
        if condition.type == "Progressing" and pod_problem is not None:
            return _condition("Ready", False, pod_problem.reason, pod_problem.message, generation)
        if condition.type in healthy and condition.status != healthy[condition.type]:
            return _condition("Ready", False, condition.reason, condition.message, generation)
        if condition.type == "Progressing" and condition.status == "True":
            return _condition("Ready", False, condition.reason, condition.message, generation)
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return _condition("Ready", False, condition.reason, condition.message, generation)
    return _condition("Ready", True, "Ready", "serving", generation)


def decide_conditions(obs: Observation) -> list[Condition]:
    """All five conditions for one observation, in display order."""
    parts = [model_resolved(obs), scheduled(obs), progressing(obs), available(obs)]
    return [*parts, ready(parts, obs.generation, obs.pod_problem)]
