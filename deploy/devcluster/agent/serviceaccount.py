"""The in-cluster credentials a kubelet gives a pod: its ServiceAccount token, the CA, its namespace.

The API server's ServiceAccount admission adds a projected ``kube-api-access-*`` volume to every pod
that automounts a token; a kubelet fills it through the TokenRequest API and mounts it at
``/var/run/secrets/kubernetes.io/serviceaccount``. Without a mount namespace that path cannot be the
volume here, so the agent fills the volume's directory the same way and also writes a kubeconfig
naming the same token and CA: the official client (and kopf through it) falls back to ``$KUBECONFIG``
when the in-cluster token file is absent. The process then acts as its ServiceAccount, under the
chart's RBAC, exactly as on a kubelet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelplane.devcluster.kube import AsyncApi

DEFAULT_EXPIRATION = 3607


def token_source(volume: dict[str, Any]) -> dict[str, Any] | None:
    """The ``serviceAccountToken`` source of a projected volume, if it has one."""
    for source in (volume.get("projected") or {}).get("sources") or []:
        if "serviceAccountToken" in source:
            token: dict[str, Any] = source["serviceAccountToken"]
            return token
    return None


def token_request(pod: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """The TokenRequest a kubelet sends: bound to the pod, with the source's audience and lifetime."""
    spec: dict[str, Any] = {
        "expirationSeconds": int(source.get("expirationSeconds") or DEFAULT_EXPIRATION),
        "boundObjectRef": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod["metadata"]["name"],
            "uid": pod["metadata"]["uid"],
        },
    }
    if source.get("audience"):
        spec["audiences"] = [source["audience"]]
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}


def kubeconfig(server: str, ca_file: Path, token_file: Path, namespace: str) -> str:
    """A kubeconfig that reads the pod's token file (what the in-cluster loader would use)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "in-cluster", "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": "service-account", "user": {"tokenFile": str(token_file)}}],
        "contexts": [
            {
                "name": "in-cluster",
                "context": {"cluster": "in-cluster", "user": "service-account", "namespace": namespace},
            }
        ],
        "current-context": "in-cluster",
    }
    return yaml.safe_dump(config, sort_keys=False)


async def fill(api: AsyncApi, pod: dict[str, Any], volume: dict[str, Any], path: Path) -> Path | None:
    """Fill a projected token volume at ``path``; returns the kubeconfig written (None: not one)."""
    source = token_source(volume)
    if source is None:
        return None
    namespace = pod["metadata"]["namespace"]
    account = pod["spec"].get("serviceAccountName") or "default"
    answer = await api.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", token_request(pod, source)
    )
    return write_credentials(path, source.get("path") or "token", answer["status"]["token"], api, namespace)


def write_credentials(path: Path, token_name: str, token: str, api: AsyncApi, namespace: str) -> Path:
    """The volume's files (token, ca.crt, namespace) and the pod's kubeconfig beside its volumes."""
    token_file = path / token_name
    token_file.write_text(token)
    ca_file = path / "ca.crt"
    ca_file.write_bytes(Path(api.creds.ca_file).read_bytes())
    (path / "namespace").write_text(namespace)
    config = path.parent.parent / "kubeconfig"
    config.write_text(kubeconfig(api.creds.server, ca_file, token_file, namespace))
    return config
