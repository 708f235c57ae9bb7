"""The autoscaling loop of one ModelDeployment: gather inputs, call ``decide``, write the scale.

It runs as a kopf daemon per ModelDeployment with ``autoscaling.mode: builtin``. Each step reads
the object, the routers' load for it (from the shared :class:`LoadCache`: the average concurrency
over the last scrape interval, the requests queued right now and, for a generative model, its
engines' queues as the routers last read them from its pods) and its pods, asks the
pure :func:`decide` for the replicas, and writes them through the scale subresource, with an Event
and the decision in ``status.autoscaler``. Without fresh metrics it does nothing: a scrape outage
must never look like "no traffic" and scale a busy model to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from modelplane.api import v1alpha1 as api
from modelplane.api.labels import DEPLOYMENT_LABEL, ROLE_LABEL
from modelplane.autoscaling.decide import Decision, Settings
from modelplane.autoscaling.load import ModelLoad
from modelplane.autoscaling.scaler import PodCounts, Scaler
from modelplane.kube import KubeClient, Manifest
from modelplane.operator.autoscaler.scrape import LoadCache
from modelplane.operator.events import post_event
from modelplane.operator.status.conditions import now_rfc3339

log = logging.getLogger("modelplane.autoscaler")

STEP_SECONDS = 2.0


def count_pods(pods: list[Manifest]) -> PodCounts:
    """Classify the stable pods: ready, still starting, or waiting for a node (not capacity)."""
    ready = starting = unschedulable = 0
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        conditions = {c.get("type"): c for c in pod.get("status", {}).get("conditions", [])}
        scheduled = conditions.get("PodScheduled", {})
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            unschedulable += 1
        elif conditions.get("Ready", {}).get("status") == "True":
            ready += 1
        else:
            starting += 1
    return PodCounts(ready, starting, unschedulable)


@dataclass
class Autoscaler:
    """State of one deployment's loop (kept in memory; a restart starts a fresh window)."""

    namespace: str
    name: str
    kube: KubeClient
    loads: LoadCache
    scaler: Scaler = field(default_factory=Scaler)

    async def step(self, now: float) -> Decision | None:
        body = await self.kube.get(api.API_VERSION, api.KIND, self.namespace, self.name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        try:
            spec = api.ModelDeploymentSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return None
        if spec.autoscaling.mode != "builtin" or not self.loads.fresh(now):
            return None
        load = self.loads.loads.get(f"{self.namespace}/{self.name}")
        pods = await self.kube.list_objects(
            "v1", "Pod", self.namespace, f"{DEPLOYMENT_LABEL}={self.name},{ROLE_LABEL}=stable"
        )
        current = spec.replicas
        decision = self.scaler.step(
            Settings.from_spec(spec.autoscaling), now, load, current, count_pods(pods)
        )
        await self._write(body, current, decision, load)
        return decision

    async def _write(self, body: Manifest, current: int, decision: Decision, load: ModelLoad | None) -> None:
        status: dict[str, Any] = (body.get("status") or {}).get("autoscaler") or {}
        report = {
            "desiredReplicas": decision.desired,
            "metric": "concurrency",
            "observedConcurrency": round(decision.stable_concurrency, 2),
        }
        if load is not None and load.engine_waiting is not None:
            report["observedEngineWaiting"] = round(load.engine_waiting, 2)
        if decision.desired != current:
            await self.kube.patch_merge(
                api.API_VERSION,
                api.KIND,
                self.namespace,
                self.name,
                {"spec": {"replicas": decision.desired}},
                subresource="scale",
            )
            report |= {"lastScaleTime": now_rfc3339(), "lastScaleReason": decision.reason}
            await self._event(body, current, decision)
            log.info(
                "%s/%s: %d -> %d (%s)", self.namespace, self.name, current, decision.desired, decision.reason
            )
        if any(status.get(k) != v for k, v in report.items()):
            await self.kube.patch_status(
                api.API_VERSION, api.KIND, self.namespace, self.name, {"autoscaler": {**status, **report}}
            )

    async def _event(self, body: Manifest, current: int, decision: Decision) -> None:
        message = f"replicas {current} -> {decision.desired}: {decision.reason}"
        await post_event(self.kube, body, "Normal", "Scaled", message, "modelplane-autoscaler")

    async def run(self, stopped: Stopped) -> None:
        """Step every couple of seconds until the daemon is stopped; errors are logged and retried."""
        while not stopped.is_set():
            try:
                await self.step(time.monotonic())
            except Exception:
                log.warning("autoscaling %s/%s failed this step", self.namespace, self.name, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), timeout=STEP_SECONDS)


class Stopped(Protocol):
    """What a kopf daemon's ``stopped`` flag offers (an asyncio.Event does too)."""

    def is_set(self) -> bool: ...

    def wait(self) -> Awaitable[Any]: ...
