"""Kubernetes discovery: routes from ModelDeployments, their EndpointSlices and their pods.

- ModelDeployments give the routing config: the canary's percent, the shadow's, and whether the
  model may be scaled to zero (then requests wait for activation instead of failing).
- EndpointSlices give the ready addresses (readiness as the kubelet and the EndpointSlice
  controller decide it, terminating endpoints excluded).
- Pods give each address its role and model version (through the slice's ``targetRef``), and
  whether it serves the OpenAI API: the label ``modelplane.io/api: openai`` marks a generative
  runtime, whose route is then balanced by its engines' load (:data:`modelplane.api.labels.API_LABEL`).
- The annotation ``modelplane.io/prefix-affinity: "true"`` on a ModelDeployment turns on prefix
  affinity for its ``/v1`` requests (:data:`PREFIX_AFFINITY_ANNOTATION`).

Three informers (list + resumable watch) keep caches current; every change recomputes the whole
table from the caches with :func:`build_routes`, a pure function. Activation of a scaled-to-zero
model sets its scale subresource to one replica (the router's RBAC allows only that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from pydantic import ValidationError

from modelplane.api import v1alpha1 as api
from modelplane.api.labels import API_LABEL, API_OPENAI, DEPLOYMENT_LABEL, ROLE_LABEL, VERSION_LABEL
from modelplane.informer import Informer
from modelplane.kube import KubeApi, KubeError, Manifest
from modelplane.serving.router.balancing import Backend, Endpoint
from modelplane.serving.router.discovery import ApplyRoutes
from modelplane.serving.router.routes import ModelRoute

log = logging.getLogger("modelplane.router")

DEFAULT_VERSION = "1"  # a storageUri model without a registry version is served as version 1
# Set by the operator on the pods of generative runtimes (to move to modelplane.api.labels with it).
PREFIX_AFFINITY_ANNOTATION = "modelplane.io/prefix-affinity"


def _ports(slice_: Manifest) -> dict[str, int]:
    return {p.get("name", ""): int(p["port"]) for p in slice_.get("ports") or [] if p.get("port")}


def build_routes(
    deployments: Mapping[str, Manifest], slices: Mapping[str, Manifest], pods: Mapping[str, Manifest]
) -> dict[str, ModelRoute]:
    """The route table for the cluster's ModelDeployments (keys ``namespace/name``)."""
    pod_labels = {key: pod.get("metadata", {}).get("labels", {}) for key, pod in pods.items()}
    routes: dict[str, ModelRoute] = {}
    for key, md in deployments.items():
        namespace, name = key.split("/", 1)
        try:
            spec = api.ModelDeploymentSpec.model_validate(md.get("spec") or {})
        except ValidationError:
            log.warning("ModelDeployment %s has an invalid spec; not routing it", key)
            continue
        by_role: dict[str, tuple[str, list[Endpoint]]] = {}
        generative = False
        for slice_ in slices.values():
            meta = slice_.get("metadata", {})
            if meta.get("namespace") != namespace or meta.get("labels", {}).get(DEPLOYMENT_LABEL) != name:
                continue
            ports = _ports(slice_)
            if "http" not in ports:
                continue
            for endpoint in slice_.get("endpoints") or []:
                conditions = endpoint.get("conditions") or {}
                if conditions.get("ready") is not True or conditions.get("terminating") is True:
                    continue
                ref = endpoint.get("targetRef") or {}
                labels = pod_labels.get(f"{namespace}/{ref.get('name', '')}")
                if labels is None or not endpoint.get("addresses"):
                    continue
                generative = generative or labels.get(API_LABEL) == API_OPENAI
                role = labels.get(ROLE_LABEL, "stable")
                version = labels.get(VERSION_LABEL, DEFAULT_VERSION)
                address = endpoint["addresses"][0]
                host = f"[{address}]" if ":" in address else address
                grpc = f"{host}:{ports['grpc']}" if "grpc" in ports else None
                entry = by_role.setdefault(role, (version, []))
                entry[1].append(
                    Endpoint(
                        key=f"{address}:{ports['http']}", http=f"http://{host}:{ports['http']}", grpc=grpc
                    )
                )
        annotations = (md.get("metadata") or {}).get("annotations") or {}
        canary_percent = spec.traffic.canary.percent if spec.traffic.canary and "canary" in by_role else 0
        backends: list[Backend] = []
        endpoints: dict[str, list[Endpoint]] = {}
        for role, weight in (("stable", 100 - canary_percent), ("canary", canary_percent)):
            if role in by_role:
                version, found = by_role[role]
                backends.append(Backend(version=version, weight=weight, role=role))
                endpoints.setdefault(version, []).extend(sorted(found, key=lambda e: e.key))
        shadow = None
        if spec.traffic.shadow and spec.traffic.shadow.percent and "shadow" in by_role:
            version, found = by_role["shadow"]
            shadow = Backend(version=version, weight=spec.traffic.shadow.percent, role="shadow")
            endpoints.setdefault(version, []).extend(sorted(found, key=lambda e: e.key))
        if not backends:
            # No ready pod yet: a placeholder so requests wait (scale from zero) or get a clear 503.
            backends = [Backend(version=str(spec.model.version or DEFAULT_VERSION), weight=100)]
        routes[key] = ModelRoute(
            name=key,
            backends=backends,
            endpoints=endpoints,
            shadow=shadow,
            scaled_to_zero=spec.autoscaling.min_replicas == 0,
            backend_model=spec.model.name,
            generative=generative,
            prefix_affinity=annotations.get(PREFIX_AFFINITY_ANNOTATION, "").lower() == "true",
        )
    return routes


def _ignore(routes: dict[str, ModelRoute]) -> None:
    """The table sink before :meth:`KubernetesDiscovery.start` names the router's."""


class KubernetesDiscovery:
    """The informers and the activation call, around :func:`build_routes`."""

    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube
        self.apply: ApplyRoutes = _ignore
        self._pending: asyncio.Handle | None = None
        self._task: asyncio.Task[None] | None = None
        selector = f"{DEPLOYMENT_LABEL}"
        self.deployments = Informer(kube, api.API_VERSION, api.KIND, self._changed)
        self.slices = Informer(
            kube, "discovery.k8s.io/v1", "EndpointSlice", self._changed, label_selector=selector
        )
        self.pods = Informer(kube, "v1", "Pod", self._changed, label_selector=selector)

    def _changed(self) -> None:
        # Coalesce bursts of events (a rollout touches many objects) into one rebuild.
        if self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(0.05, self._rebuild)

    def _rebuild(self) -> None:
        self._pending = None
        if not (
            self.deployments.synced.is_set() and self.slices.synced.is_set() and self.pods.synced.is_set()
        ):
            return
        self.apply(build_routes(self.deployments.items, self.slices.items, self.pods.items))

    async def start(self, apply: ApplyRoutes) -> None:
        """Start the informers; the first table is applied once all three have listed."""
        self.apply = apply
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        """Stop the informers and close the client (the discovery owns it)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.kube.close()

    async def run(self) -> None:
        await asyncio.gather(self.deployments.run(), self.slices.run(), self.pods.run())

    async def activate(self, route_key: str) -> None:
        """Ask for one replica of a scaled-to-zero ModelDeployment (through its scale subresource)."""
        namespace, name = route_key.split("/", 1)
        md = self.deployments.items.get(route_key, {})
        if (md.get("spec") or {}).get("replicas") not in (0, None):
            return
        try:
            await self.kube.patch_merge(
                api.API_VERSION, api.KIND, namespace, name, {"spec": {"replicas": 1}}, subresource="scale"
            )
            log.info("activated %s from zero", route_key)
        except KubeError as exc:
            log.warning("could not activate %s: %s", route_key, exc)
