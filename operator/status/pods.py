"""What is wrong with a ModelDeployment's serving pods, read from their statuses (no I/O).

A Deployment's own status only counts pods: "0 of 3 ready" reads the same whether the model is
still loading or every pod crash-loops. The pods' container statuses say which: the kubelet (and
the test cluster's node agent) reports a waiting reason, the last termination with its exit code
and message, and whether each container started and is ready. :func:`pod_problems` turns them into
the reasons the conditions carry, most telling first:

- ``ModelDownloadFailed``: the ``prepare-model`` init container fails (a wrong token, a missing
  artifact, a digest that does not match); its message is the end of the container's log;
- ``SecretNotFound`` / ``CreateContainerConfigError``: a container's configuration cannot be built,
  for example the artifact token Secret does not exist in the namespace;
- ``ImagePullBackOff``: the image cannot be pulled;
- ``OOMKilled``: a container was killed for exceeding its memory limit;
- ``CrashLoopBackOff``: a container keeps exiting;
- ``ProbeFailing``: a started container fails its readiness probe, or has not passed its start-up
  probe within the start-up allowance.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Reasons in the order they are reported when pods disagree: the cause most likely to explain
#: the others first (a pod without its model cannot serve, whatever else happens to it).
REASONS = (
    "ModelDownloadFailed",
    "SecretNotFound",
    "CreateContainerConfigError",
    "ImagePullBackOff",
    "OOMKilled",
    "CrashLoopBackOff",
    "ProbeFailing",
)
PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
DOWNLOAD_CONTAINER = "prepare-model"
MAX_DETAIL = 400
_SECRET_MISSING = re.compile(r"""secret ["']([^"']+)["'] not found""", re.IGNORECASE)

Manifest = Mapping[str, Any]


@dataclass(frozen=True)
class PodProblem:
    """One pod's trouble: a reason of :data:`REASONS` and a message a user can act on."""

    reason: str
    message: str


def _detail(text: str) -> str:
    """A log tail or a message, on one line and short enough for a condition."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_DETAIL else "..." + flat[-MAX_DETAIL:]


def _terminated(status: Manifest) -> Mapping[str, Any] | None:
    """The container's failed termination, now or the last one; None if it never failed."""
    for state in (status.get("state") or {}, status.get("lastState") or {}):
        terminated = state.get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            return dict(terminated)
    return None


def _exit(terminated: Mapping[str, Any]) -> str:
    message = terminated.get("message") or ""
    code = f"exit code {terminated.get('exitCode')}"
    return f"{code}: {_detail(message)}" if message.strip() else code


def _config_problem(pod: str, container: str, message: str, namespace: str) -> PodProblem:
    missing = _SECRET_MISSING.search(message)
    if missing:
        secret = missing.group(1)
        return PodProblem(
            "SecretNotFound",
            f"pod {pod}: Secret {secret!r} does not exist in namespace {namespace!r}: create it "
            f"(kubectl create secret generic {secret} -n {namespace} --from-literal=token=TOKEN, with a "
            "registry token that has the read scope), or run the operator with another "
            "--artifact-token-secret",
        )
    return PodProblem("CreateContainerConfigError", f"pod {pod}: container {container}: {_detail(message)}")


def _waiting_problem(pod: str, namespace: str, status: Manifest) -> PodProblem | None:
    waiting = (status.get("state") or {}).get("waiting") or {}
    reason, message = waiting.get("reason", ""), waiting.get("message", "")
    name = status.get("name", "?")
    if reason == "CreateContainerConfigError":
        return _config_problem(pod, name, message, namespace)
    if reason in PULL_REASONS:
        return PodProblem("ImagePullBackOff", f"pod {pod}: container {name}: {_detail(message or reason)}")
    return None


def _init_problem(pod: str, namespace: str, status: Manifest) -> PodProblem | None:
    if problem := _waiting_problem(pod, namespace, status):
        return problem
    finished = ((status.get("state") or {}).get("terminated") or {}).get("exitCode") == 0
    terminated = None if finished else _terminated(status)
    if terminated is None:
        return None
    name = status.get("name", "?")
    if name == DOWNLOAD_CONTAINER:
        return PodProblem(
            "ModelDownloadFailed", f"pod {pod}: downloading the model failed ({_exit(terminated)})"
        )
    return PodProblem("CrashLoopBackOff", f"pod {pod}: init container {name} failed ({_exit(terminated)})")


def _startup_allowance(spec: Manifest) -> float:
    """Seconds the kubelet gives a container to pass its start-up probe (none: no limit)."""
    probe = spec.get("startupProbe")
    if not probe:
        return float("inf")
    period, failures = probe.get("periodSeconds", 10), probe.get("failureThreshold", 3)
    return float(probe.get("initialDelaySeconds", 0) + period * failures)


def _parse_time(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def _container_problem(
    pod: str, namespace: str, status: Manifest, spec: Manifest, unready_since: datetime | None, now: datetime
) -> PodProblem | None:
    if problem := _waiting_problem(pod, namespace, status):
        return problem
    name = status.get("name", "?")
    if status.get("ready"):
        return None  # serving now, whatever happened before
    state = status.get("state") or {}
    terminated = _terminated(status)
    if terminated is not None and terminated.get("reason") == "OOMKilled":
        return PodProblem(
            "OOMKilled", f"pod {pod}: container {name} ran out of memory: raise resources.memory"
        )
    if terminated is not None:  # exited and not serving since: waiting to restart, or trying again
        restarts = status.get("restartCount", 0)
        return PodProblem(
            "CrashLoopBackOff",
            f"pod {pod}: container {name} keeps exiting ({_exit(terminated)}; {restarts} restart(s))",
        )
    running = state.get("running")
    if not running:
        return None
    started_at = _parse_time(running.get("startedAt"))
    if status.get("started") and unready_since and started_at and unready_since > started_at:
        # The pod turned unready after this container had started: its readiness probe fails
        # (a container that has not been ready yet is still coming up, not failing).
        return PodProblem("ProbeFailing", f"pod {pod}: container {name} fails its readiness probe")
    allowance = _startup_allowance(spec)
    if started_at is not None and (now - started_at).total_seconds() > allowance:
        return PodProblem(
            "ProbeFailing",
            f"pod {pod}: container {name} has not passed its start-up probe in {allowance:.0f}s",
        )
    return None


def pod_problem(pod: Manifest, now: datetime) -> PodProblem | None:
    """The one thing most wrong with a pod (None when it is fine, starting, or going away)."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    name, namespace = meta.get("name", "?"), meta.get("namespace", "default")
    status, spec = pod.get("status") or {}, pod.get("spec") or {}
    specs = {c.get("name"): c for c in spec.get("containers") or []}
    ready: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    unready_since = _parse_time(ready.get("lastTransitionTime")) if ready.get("status") == "False" else None
    found: list[PodProblem] = []
    for init in status.get("initContainerStatuses") or []:
        if problem := _init_problem(name, namespace, init):
            found.append(problem)
    for container in status.get("containerStatuses") or []:
        container_spec = specs.get(container.get("name"), {})
        if problem := _container_problem(name, namespace, container, container_spec, unready_since, now):
            found.append(problem)
    return min(found, key=lambda p: REASONS.index(p.reason), default=None)


def pod_problems(pods: Iterable[Manifest], now: datetime) -> list[PodProblem]:
    """Every troubled pod's problem, the most telling reason first (pods in name order within it)."""
    problems = [p for pod in pods if (p := pod_problem(pod, now)) is not None]
    return sorted(problems, key=lambda p: (REASONS.index(p.reason), p.message))


def summarize(problems: list[PodProblem]) -> PodProblem | None:
    """One reason and message for the conditions: the first problem, and how many pods share it."""
    if not problems:
        return None
    first = problems[0]
    same = sum(1 for p in problems if p.reason == first.reason)
    more = f" (and {same - 1} more pod(s) with the same reason)" if same > 1 else ""
    return PodProblem(first.reason, first.message + more)
