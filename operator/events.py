"""Kubernetes Events about a ModelDeployment: how users see what the operator and autoscaler did."""

from __future__ import annotations

import logging

from modelplane.api import v1alpha1 as api
from modelplane.kube import KubeClient, Manifest
from modelplane.operator.status.conditions import now_rfc3339

log = logging.getLogger("modelplane.operator")


def event_manifest(body: Manifest, kind: str, reason: str, message: str, component: str) -> Manifest:
    """A core/v1 Event about the ModelDeployment ``body`` (``kind`` is Normal or Warning)."""
    meta = body["metadata"]
    now = now_rfc3339()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": component},
        "reportingComponent": component,
    }


async def post_event(
    kube: KubeClient, body: Manifest, kind: str, reason: str, message: str, component: str
) -> None:
    """Post an Event; best effort, since the status already carries the news."""
    meta = body["metadata"]
    try:
        await kube.create_event(meta["namespace"], event_manifest(body, kind, reason, message, component))
    except Exception:
        log.warning("could not post an Event for %s/%s", meta["namespace"], meta["name"], exc_info=True)
