"""The Helm chart on a real control plane: dry-run, Pod Security, install, serve, upgrade, uninstall.

The node agent runs the chart's pods with their container commands, as their ServiceAccounts, so the
operator, registry and router really run under the chart's RBAC. The dev cluster has no DNS and no
Service VIPs: clients reach a Service through its EndpointSlice (pod IPs are loopback addresses),
and the operator, whose default registry URL is the registry Service's DNS name, is pointed at the
registry pod's address by a `helm upgrade` (which is also the upgrade under test).

The tests of this module run in order against one release.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
import yaml

from modelplane.registry_client.client import RegistryClient
from modelplane.testing import chart
from modelplane.testing.cluster import Cluster, wait_for
from modelplane.testing.operator import register_mlp

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
STORAGE_CLASS = "modelplane-chart-test"
ARTIFACT_SECRET = "modelplane-artifact-token"
COMPONENTS = ("operator", "registry", "router")


@dataclass
class Release:
    name: str
    namespace: str
    models: str  # the namespace the ModelDeployments live in
    pv: str
    state: dict[str, Any] = field(default_factory=dict)

    def resource(self, component: str) -> str:
        return f"{self.name}-modelplane-{component}"


def helm_ok(cluster: Cluster, *args: str, timeout: float = 300) -> str:
    result = cluster.helm(*args, timeout=timeout)
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def crds(cluster_session: Cluster) -> None:
    cluster_session.kubectl("apply", "--server-side", "-f", str(chart.CHART / "crds"))
    for crd in ("modeldeployments.modelplane.io", "clusterkopfpeerings.kopf.dev"):
        cluster_session.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")


@pytest.fixture(scope="module")
def release(cluster_session: Cluster, crds: None) -> Iterator[Release]:
    """A namespace that enforces the restricted Pod Security Standard, a volume for the registry's claim,
    and a namespace for models. Uninstalled (if a test did not) and deleted at the end."""
    suffix = uuid.uuid4().hex[:6]
    rel = Release(
        name=f"mp{suffix}", namespace=f"mp-chart-{suffix}", models=f"mp-models-{suffix}", pv=f"mp-{suffix}"
    )
    cluster = cluster_session
    cluster.kubectl("create", "namespace", rel.namespace)
    cluster.kubectl(
        "label",
        "namespace",
        rel.namespace,
        *(f"pod-security.kubernetes.io/{mode}=restricted" for mode in ("enforce", "warn", "audit")),
    )
    cluster.kubectl("create", "namespace", rel.models)
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": rel.pv},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": STORAGE_CLASS,
            "persistentVolumeReclaimPolicy": "Delete",
            "hostPath": {"path": f"/var/lib/modelplane-test/{rel.pv}"},
            "claimRef": {"namespace": rel.namespace, "name": rel.resource("registry")},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(pv))
    try:
        yield rel
    finally:
        cluster.helm("uninstall", rel.name, "-n", rel.namespace, "--wait", "--timeout=120s", timeout=150)
        for ns in (rel.models, rel.namespace):
            cluster.kubectl(
                "delete", "namespace", ns, "--wait=true", "--timeout=90s", check=False, timeout=120
            )
        cluster.kubectl("delete", "pv", rel.pv, "--wait=false", check=False)


def pods(cluster: Cluster, rel: Release, component: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json(
        "pods",
        "-n",
        rel.namespace,
        "-l",
        f"app.kubernetes.io/instance={rel.name},app.kubernetes.io/component={component}",
    )["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def ready_address(cluster: Cluster, namespace: str, service: str, port_name: str) -> str:
    """``ip:port`` of a ready endpoint of a Service (what kube-proxy would forward to)."""

    def find() -> str | None:
        slices = cluster.get_json(
            "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={service}"
        )["items"]
        for s in slices:
            port = next((p["port"] for p in s.get("ports") or [] if p.get("name") == port_name), None)
            for endpoint in s.get("endpoints") or []:
                if port is not None and endpoint.get("conditions", {}).get("ready"):
                    return f"{endpoint['addresses'][0]}:{port}"
        return None

    address: str = wait_for(f"a ready endpoint of {namespace}/{service}", find, timeout=60)
    return address


def wait_rolled_out(cluster: Cluster, rel: Release, timeout: int = 240) -> None:
    deployments = [f"deploy/{rel.resource(c)}" for c in COMPONENTS]
    cluster.kubectl(
        "rollout", "status", "-n", rel.namespace, *deployments, f"--timeout={timeout}s", timeout=timeout + 30
    )


def test_rendered_chart_passes_server_side_dry_run(cluster: Cluster, crds: None, namespace: str) -> None:
    rendered = chart.helm(
        "template", "dry", str(chart.CHART), "--namespace", namespace, "--set", "router.ingress.enabled=true"
    )
    assert rendered.returncode == 0, rendered.stderr
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered.stdout, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/dry-modelplane-operator created (server dry run)" in result.stdout
    assert (
        "clusterrole.rbac.authorization.k8s.io/dry-modelplane-operator created (server dry run)"
        in result.stdout
    )


def test_install_brings_up_operator_registry_and_router_under_restricted_pod_security(
    cluster: Cluster, release: Release
) -> None:
    out = helm_ok(
        cluster,
        "install", release.name, str(chart.CHART), "-n", release.namespace,
        "--set", f"registry.persistence.storageClassName={STORAGE_CLASS}",
        "--set", "registry.persistence.size=1Gi",
        "--wait", "--timeout=5m",
    )  # fmt: skip
    assert "Modelplane 0.1.0 is installed" in out
    assert "get secret" in out
    wait_rolled_out(cluster, release)
    counts = {c: len(pods(cluster, release, c)) for c in COMPONENTS}
    assert counts == {"operator": 2, "registry": 1, "router": 2}
    for component in COMPONENTS:
        for pod in pods(cluster, release, component):
            ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"]
            assert ready == "True", pod["metadata"]["name"]
    # Admission enforced the restricted profile: a pod that breaks it is refused in this namespace.
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [
                {"name": "c", "image": "x", "command": ["true"], "securityContext": {"privileged": True}}
            ]
        },
    }
    refused = cluster.kubectl(
        "apply", "-n", release.namespace, "-f", "-", input=yaml.safe_dump(bad), check=False
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted' in refused.stderr

    # The components act as their ServiceAccounts, with exactly the access they need.
    def can(component: str, verb: str, resource: str) -> bool:
        account = f"system:serviceaccount:{release.namespace}:{release.resource(component)}"
        resource, _, sub = resource.partition("/")
        extra = [f"--subresource={sub}"] if sub else []
        result = cluster.kubectl(
            "auth", "can-i", verb, resource, *extra, "-A", f"--as={account}", check=False
        )
        return result.stdout.strip() == "yes"

    assert can("operator", "watch", "modeldeployments.modelplane.io")
    assert can("operator", "create", "deployments.apps")
    assert can("router", "patch", "modeldeployments.modelplane.io/scale")
    assert can("router", "watch", "endpointslices.discovery.k8s.io")
    for component in COMPONENTS:
        assert not can(component, "list", "secrets")
        assert not can(component, "create", "pods")
        assert not can(component, "impersonate", "serviceaccounts")
    assert not can("registry", "list", "pods")
    assert not can("router", "create", "deployments.apps")

    # The two operator replicas peer with distinct priorities: one works, the other stands by.
    def peers() -> list[int] | None:
        status = cluster.get_json("clusterkopfpeering", "modelplane").get("status") or {}
        priorities = sorted(int(peer["priority"]) for peer in status.values())
        return priorities if len(priorities) == 2 else None

    priorities = wait_for("two operator peers", peers, timeout=60)
    assert priorities[0] != priorities[1]
    release.state["uids"] = {
        c: sorted(p["metadata"]["uid"] for p in pods(cluster, release, c)) for c in COMPONENTS
    }


def test_upgrade_with_a_changed_value_rolls_only_that_component(cluster: Cluster, release: Release) -> None:
    before = release.state.get("uids")
    assert before, "needs the install test"
    generations = {
        c: cluster.get_json("deploy", release.resource(c), "-n", release.namespace)["metadata"]["generation"]
        for c in COMPONENTS
    }
    registry = ready_address(cluster, release.namespace, release.resource("registry"), "http")
    helm_ok(
        cluster,
        "upgrade", release.name, str(chart.CHART), "-n", release.namespace, "--reuse-values",
        "--set", f"operator.registryUrl=http://{registry}",
        "--wait", "--timeout=5m",
    )  # fmt: skip
    wait_rolled_out(cluster, release)
    after = {c: sorted(p["metadata"]["uid"] for p in pods(cluster, release, c)) for c in COMPONENTS}
    assert after["registry"] == before["registry"]
    assert after["router"] == before["router"]
    assert len(after["operator"]) == 2
    assert not set(after["operator"]) & set(before["operator"])
    now = {
        c: cluster.get_json("deploy", release.resource(c), "-n", release.namespace)["metadata"]["generation"]
        for c in COMPONENTS
    }
    assert now == {**generations, "operator": generations["operator"] + 1}
    release.state["registry"] = registry


def test_register_deploy_and_infer_through_the_router(
    cluster: Cluster, release: Release, tmp_path: Path
) -> None:
    registry = release.state.get("registry")
    assert registry, "needs the upgrade test"
    secret = cluster.get_json("secret", f"{release.name}-modelplane-registry-token", "-n", release.namespace)
    admin = base64.b64decode(secret["data"]["token"]).decode()
    with RegistryClient(f"http://{registry}", admin) as client:
        modules = register_mlp(client, tmp_path, "iris", seeds=[7])
        client.set_alias("iris", "production", 1)
        read_token = client.create_token("serving-pods", scopes=["read"]).token
    if cluster.state_dir is not None:  # the database and artifacts live on the registry's volume
        volumes = list((cluster.state_dir / "pods").glob(f"{release.namespace}_*registry*/volumes/data"))
        assert len(volumes) == 1
        assert (volumes[0] / "registry.db").is_file()
        assert any((volumes[0] / "artifacts").rglob("*"))
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        ARTIFACT_SECRET,
        "-n",
        release.models,
        f"--from-literal=token={read_token}",
    )
    cluster.kubectl("apply", "-n", release.models, "-f", str(REPO / "deploy" / "examples" / "iris.yaml"))

    def ready() -> dict[str, Any] | None:
        md: dict[str, Any] = cluster.get_json("modeldeployment", "iris", "-n", release.models)
        conditions = {c["type"]: c["status"] for c in md.get("status", {}).get("conditions", [])}
        return md if conditions.get("Ready") == "True" else None

    md = wait_for("iris Ready", ready, timeout=240)
    assert md["status"]["model"]["version"] == 1

    router = ready_address(cluster, release.namespace, release.resource("router"), "http")
    batch = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    client = httpclient.InferenceServerClient(router, connection_timeout=10, network_timeout=60)
    inputs = [httpclient.InferInput("INPUT__0", list(batch.shape), "FP32")]
    inputs[0].set_data_from_numpy(batch)

    def infer() -> tuple[np.ndarray] | None:  # a tuple: wait_for tests truthiness, an array cannot
        try:
            result = client.infer(
                "iris",
                inputs,
                outputs=[httpclient.InferRequestedOutput("OUTPUT__0")],
                headers={"X-Modelplane-Namespace": release.models},
            )
        except Exception:  # the router may not have seen the endpoints yet
            return None
        output: np.ndarray = result.as_numpy("OUTPUT__0")
        return (output,)

    (output,) = wait_for("an answer through the router", infer, timeout=60, interval=1)
    with torch.no_grad():
        expected = modules[1](torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    cluster.kubectl(
        "delete", "-n", release.models, "modeldeployment", "iris", "--wait=true", "--timeout=90s", timeout=120
    )


def test_uninstall_leaves_no_workload_and_keeps_the_crds(cluster: Cluster, release: Release) -> None:
    helm_ok(cluster, "uninstall", release.name, "-n", release.namespace, "--wait", "--timeout=3m")
    selector = f"app.kubernetes.io/instance={release.name}"

    def gone() -> bool:
        left = cluster.get_json(
            "deploy,rs,pods,svc,pvc,pdb,networkpolicy,sa,secret", "-n", release.namespace, "-l", selector
        )
        return not left["items"]

    wait_for("the release's namespaced objects to go", gone, timeout=120)
    cluster_wide = cluster.get_json("clusterroles,clusterrolebindings,clusterkopfpeerings", "-l", selector)[
        "items"
    ]
    assert cluster_wide == []
    assert cluster.get_json("pods", "-n", release.namespace)["items"] == []
    for crd in ("modeldeployments.modelplane.io", "clusterkopfpeerings.kopf.dev"):
        assert cluster.kubectl("get", "crd", crd, check=False).returncode == 0
