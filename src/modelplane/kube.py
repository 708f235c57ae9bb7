"""A small async Kubernetes REST client: get, list, watch, server-side apply, delete.

The operator's writes and the router's watches go through here (kopf does its own watching). Credentials come
from the same places kubectl's do (the in-cluster service account, else ``$KUBECONFIG`` or
``~/.kube/config``) through the official client's config loader; the requests themselves are plain
HTTP with httpx, so every call is visible and easy to reason about.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

Manifest = dict[str, Any]

# apiVersion/kind → (path prefix, plural) for the kinds the operator touches.
RESOURCES: dict[tuple[str, str], tuple[str, str]] = {
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("v1", "Event"): ("/api/v1", "events"),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    ("modelplane.io/v1alpha1", "ModelDeployment"): ("/apis/modelplane.io/v1alpha1", "modeldeployments"),
    ("discovery.k8s.io/v1", "EndpointSlice"): ("/apis/discovery.k8s.io/v1", "endpointslices"),
    ("kopf.dev/v1", "ClusterKopfPeering"): ("/apis/kopf.dev/v1", "clusterkopfpeerings"),
}


class KubeError(RuntimeError):
    """An API request failed; ``status`` is the HTTP status (0 when the server was unreachable)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason

    @property
    def temporary(self) -> bool:
        """Worth retrying: conflicts, throttling, server errors and connection failures."""
        return self.status in (0, 409, 429) or self.status >= 500


@dataclass(frozen=True)
class Connection:
    host: str
    verify: ssl.SSLContext | bool
    cert: tuple[str, str] | None
    token: str | None


def load_connection() -> Connection:
    """Credentials for the cluster: in-cluster first, then the kubeconfig (``$KUBECONFIG``)."""
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    verify: ssl.SSLContext | bool = True
    if configuration.ssl_ca_cert:
        verify = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    elif not configuration.verify_ssl:
        verify = False
    cert_file: str | None = configuration.cert_file
    key_file: str | None = configuration.key_file
    cert = (cert_file, key_file) if cert_file and key_file else None
    token = None
    auth = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
    if auth:
        token = auth.removeprefix("Bearer ").strip()
    return Connection(host=configuration.host.rstrip("/"), verify=verify, cert=cert, token=token)


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    try:
        prefix, plural = RESOURCES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator does not manage {kind} ({api_version})") from None
    path = prefix
    if namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
    return path


class KubeClient(Protocol):
    """The part of :class:`KubeApi` the operator's reconcile and autoscaling loop use.

    The operator is typed against this, so its orchestration can be unit-tested with the in-memory
    :class:`modelplane.testing.fake_kube.FakeKube`; :class:`KubeApi` is the real implementation.
    """

    field_manager: str

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Manifest | None: ...

    async def list_objects(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[Manifest]: ...

    async def apply(self, manifest: Manifest) -> Manifest: ...

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None: ...

    async def patch_merge(
        self, api_version: str, kind: str, namespace: str, name: str, patch: Manifest, subresource: str = ""
    ) -> Manifest: ...

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Manifest
    ) -> Manifest: ...

    async def create_event(self, namespace: str, event: Manifest) -> None: ...


class KubeApi:
    """Async access to the API server with the operator's field manager."""

    def __init__(self, connection: Connection, field_manager: str, timeout_s: float = 15.0) -> None:
        headers = {"Accept": "application/json", "User-Agent": f"{field_manager}"}
        if connection.token:
            headers["Authorization"] = f"Bearer {connection.token}"
        self.field_manager = field_manager
        self._http = httpx.AsyncClient(
            base_url=connection.host,
            verify=connection.verify,
            cert=connection.cert,
            headers=headers,
            timeout=timeout_s,
        )
        self.writes = 0  # requests that change state, for metrics and tests

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Manifest:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise KubeError(0, f"{method} {path}: {exc}") from exc
        if response.status_code >= 400:
            try:
                status = response.json()
                message, reason = status.get("message", response.text), status.get("reason", "")
            except ValueError:
                message, reason = response.text, ""
            raise KubeError(response.status_code, f"{method} {path}: {message}", reason)
        result: Manifest = response.json() if response.content else {}
        return result

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Manifest | None:
        try:
            return await self._request("GET", resource_path(api_version, kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_objects(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[Manifest]:
        path = resource_path(api_version, kind, namespace)
        body = await self._request("GET", path, params={"labelSelector": label_selector})
        items: list[Manifest] = body.get("items", [])
        return items

    async def list_with_version(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> tuple[list[Manifest], str]:
        """All matching objects and the list's resourceVersion (to start a watch from)."""
        params = {"labelSelector": label_selector} if label_selector else {}
        body = await self._request("GET", resource_path(api_version, kind, namespace), params=params)
        return body.get("items", []), str(body.get("metadata", {}).get("resourceVersion", ""))

    async def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        resource_version: str,
        label_selector: str | None = None,
        timeout_s: int = 300,
    ) -> AsyncIterator[Manifest]:
        """Watch events (``{"type": ..., "object": ...}``) from ``resource_version`` on.

        The server closes the stream after ``timeout_s`` (a bounded watch never stalls silently);
        the caller resumes from the last resourceVersion it saw, or re-lists on ``410 Gone``.
        """
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_s),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        path = resource_path(api_version, kind, namespace)
        try:
            async with self._http.stream(
                "GET", path, params=params, timeout=httpx.Timeout(timeout_s + 30.0, connect=10.0)
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise KubeError(response.status_code, f"watch {path}: {response.text}")
                async for line in response.aiter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise KubeError(0, f"watch {path}: {exc}") from exc

    async def patch_merge(
        self, api_version: str, kind: str, namespace: str, name: str, patch: Manifest, subresource: str = ""
    ) -> Manifest:
        """JSON merge-patch an object (or one of its subresources, e.g. ``scale``)."""
        self.writes += 1
        path = resource_path(api_version, kind, namespace, name) + (f"/{subresource}" if subresource else "")
        return await self._request(
            "PATCH", path, content=json.dumps(patch), headers={"Content-Type": "application/merge-patch+json"}
        )

    async def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply ``manifest`` as this field manager, taking over conflicting fields."""
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"])
        self.writes += 1
        return await self._request(
            "PATCH",
            path,
            params={"fieldManager": self.field_manager, "force": "true"},
            content=json.dumps(manifest),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.writes += 1
        try:
            await self._request(
                "DELETE",
                resource_path(api_version, kind, namespace, name),
                json={"propagationPolicy": "Background"},
            )
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Manifest
    ) -> Manifest:
        """Merge-patch the status subresource."""
        return await self._request(
            "PATCH",
            resource_path(api_version, kind, namespace, name) + "/status",
            content=json.dumps({"status": status}),
            headers={"Content-Type": "application/merge-patch+json"},
        )

    async def create_event(self, namespace: str, event: Manifest) -> None:
        await self._request("POST", resource_path("v1", "Event", namespace), json=event)


def needs_apply(desired: Any, live: Any) -> bool:
    """True unless every field of ``desired`` already holds in ``live``.

    The server adds defaults (``protocol``, ``imagePullPolicy``, ...) and normalizes quantities
    (``2`` → ``"2"``), so ``live`` may have more and spell numbers as strings; anything ``desired``
    says that ``live`` does not is drift (or a spec change) and calls for an apply. This is what
    keeps a no-change reconcile from writing at all.
    """
    if live is None and desired in ({}, []):
        return False  # the server omits empty lists and maps: nothing to apply
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return True
        return any(needs_apply(value, live.get(key)) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return True
        return any(needs_apply(d, item) for d, item in zip(desired, live, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is not live
    if desired == live:
        return False
    return str(desired) != str(live)
