"""ModelDeployments on a test cluster: manifests, waiting for Ready, their serving pods.

Shared by the e2e suites of the operator and the router.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from modelplane.testing.cluster import Cluster, wait_for


def md_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }


def get_md(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = cluster.get_json("modeldeployment", name, "-n", namespace)
    return result


def condition(md: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in md.get("status", {}).get("conditions", []):
        if item["type"] == kind:
            return dict(item)
    return {}


def wait_ready(
    cluster: Cluster, namespace: str, name: str, replicas: int, timeout: float = 180
) -> dict[str, Any]:
    """Wait until the ModelDeployment is Ready with ``replicas`` ready replicas; returns it."""

    def check() -> dict[str, Any] | None:
        md = get_md(cluster, namespace, name)
        status = md.get("status", {})
        ok = condition(md, "Ready").get("status") == "True" and status.get("readyReplicas") == replicas
        return md if ok else None

    result: dict[str, Any] = wait_for(f"{name} Ready with {replicas} replicas", check, timeout=timeout)
    return result


def serving_pods(cluster: Cluster, namespace: str, name: str, role: str = "stable") -> list[dict[str, Any]]:
    """The ModelDeployment's pods of ``role`` that are not being deleted."""
    items: list[dict[str, Any]] = cluster.get_json(
        "pods", "-n", namespace, "-l", f"modelplane.io/deployment={name},modelplane.io/role={role}"
    )["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def ready_slice_endpoints(cluster: Cluster, namespace: str, name: str) -> set[str]:
    """``address:httpPort`` of every ready, not terminating endpoint in the deployment's EndpointSlices."""
    slices = cluster.get_json("endpointslices", "-n", namespace, "-l", f"modelplane.io/deployment={name}")
    found: set[str] = set()
    for item in slices["items"]:
        ports = {p.get("name"): p.get("port") for p in item.get("ports") or []}
        if "http" not in ports:
            continue
        for endpoint in item.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is True and conditions.get("terminating") is not True:
                found.update(f"{address}:{ports['http']}" for address in endpoint.get("addresses") or [])
    return found


def expected(module: Any, batch: np.ndarray) -> np.ndarray:
    """What ``module`` answers for ``batch`` (computed here, to compare with a served answer)."""
    with torch.no_grad():
        result: np.ndarray = module(torch.from_numpy(batch)).numpy()
    return result
