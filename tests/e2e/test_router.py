"""The router on a real control plane: ``--discovery kubernetes`` over ModelDeployments and EndpointSlices.

The operator turns ModelDeployments into serving pods (real runtimes run by the node agent); the
router runs as a process with the cluster's kubeconfig, or with a token of its own least-privilege
ServiceAccount (deploy/router/rbac.yaml), and clients reach models by name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

from modelplane.testing.cluster import Cluster, wait_for
from modelplane.testing.modeldeployments import (
    expected,
    md_manifest,
    ready_slice_endpoints,
    serving_pods,
    wait_ready,
)
from modelplane.testing.operator import OperatorProcess
from modelplane.testing.registry import RegistryProcess
from modelplane.testing.router import RouterProcess, infer_body, output_of

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BATCH = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
ROW = BATCH[:1]


def plain_spec(version: int, replicas: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": {"name": "iris", "version": version},
        "replicas": replicas,
        "resources": {"gpu": {"count": 0}},
        "autoscaling": {"mode": "none"},
        **extra,
    }


@pytest.fixture
def start_router(cluster: Cluster, tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    """Start ``modelplane router --discovery kubernetes`` for a namespace (stopped after the test)."""
    started: list[RouterProcess] = []

    def start(namespace: str, kubeconfig: Path | None = None) -> RouterProcess:
        router = RouterProcess(
            log_path=tmp_path / f"router-{len(started)}.log",
            discovery="kubernetes",
            extra_args=["--default-namespace", namespace, "--queue-timeout", "120", "--drain-timeout", "2"],
            env={"KUBECONFIG": str(kubeconfig or cluster.kubeconfig)},
        )
        started.append(router)
        return router.start()

    yield start
    for router in started:
        router.stop()
        print(f"\n----- router log -----\n{router.log_tail(3000)}")


def routed_endpoints(router: RouterProcess, key: str) -> set[str]:
    for model in router.routable():
        if model["key"] == key:
            return {e for endpoints in model["endpoints"].values() for e in endpoints}
    return set()


class RequestLoop:
    """A steady, bounded request loop in a thread: counts answers and failures until stopped."""

    def __init__(self, router: RouterProcess, model: str, want: np.ndarray, limit: int = 20_000) -> None:
        self.router, self.model, self.want, self.limit = router, model, want, limit
        self.ok = 0
        self.failures: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        with httpx.Client(base_url=self.router.url, timeout=30.0) as client:
            while not self.stopped.is_set() and self.ok + len(self.failures) < self.limit:
                if time.monotonic() > deadline:
                    self.failures.append("the loop ran past its 300 s bound")
                    return
                try:
                    response = client.post(f"/v2/models/{self.model}/infer", json=infer_body(ROW))
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code}: {response.text}")
                    elif not np.allclose(output_of(response), self.want, rtol=1e-5, atol=1e-5):
                        self.failures.append("wrong answer")
                    else:
                        self.ok += 1
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                time.sleep(0.005)

    def __enter__(self) -> RequestLoop:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(60)


def follow_scale(cluster: Cluster, router: RouterProcess, namespace: str, name: str, replicas: int) -> float:
    """Scale with kubectl; wait until the router routes exactly the EndpointSlices' ready set.

    Returns the observed lag: when the router's set first equalled the slices' final set, minus when
    the slices first showed it (both polled, so the figure is coarse).
    """
    cluster.kubectl("scale", f"md/{name}", "-n", namespace, f"--replicas={replicas}")
    slices_at: float | None = None
    final: set[str] = set()

    def converged() -> float | None:
        nonlocal slices_at, final
        current = ready_slice_endpoints(cluster, namespace, name)
        if len(current) == replicas and current != final:
            final, slices_at = current, time.monotonic()
        if slices_at is not None and routed_endpoints(router, f"{namespace}/{name}") == final:
            return time.monotonic()
        return None

    routed_at: float = wait_for(f"the router to route {replicas} endpoints of {name}", converged, 180, 0.05)
    assert slices_at is not None
    return routed_at - slices_at


def test_router_follows_scaling_with_no_failed_request(
    cluster: Cluster,
    serving_namespace: str,
    operator: OperatorProcess,
    model_registry: tuple[RegistryProcess, Any],
    start_router: Callable[..., RouterProcess],
) -> None:
    namespace = serving_namespace
    _, modules = model_registry
    cluster.apply(md_manifest("iris", plain_spec(1, replicas=1)), namespace)
    wait_ready(cluster, namespace, "iris", replicas=1)
    router = start_router(namespace)
    wait_for("the router to route iris", lambda: routed_endpoints(router, f"{namespace}/iris"), 60)

    # By model name, with tritonclient over HTTP (default namespace and the /ns/ header) and gRPC.
    want = expected(modules[1], BATCH)
    http = httpclient.InferenceServerClient(router.http_address)
    inputs = [httpclient.InferInput("INPUT__0", list(BATCH.shape), "FP32")]
    inputs[0].set_data_from_numpy(BATCH)
    np.testing.assert_allclose(http.infer("iris", inputs).as_numpy("OUTPUT__0"), want, rtol=1e-5, atol=1e-5)
    by_header = http.infer("iris", inputs, headers={"X-Modelplane-Namespace": namespace})
    np.testing.assert_allclose(by_header.as_numpy("OUTPUT__0"), want, rtol=1e-5, atol=1e-5)
    grpc = grpcclient.InferenceServerClient(router.grpc_address)
    grpc_inputs = [grpcclient.InferInput("INPUT__0", list(BATCH.shape), "FP32")]
    grpc_inputs[0].set_data_from_numpy(BATCH)
    np.testing.assert_allclose(
        grpc.infer("iris", grpc_inputs).as_numpy("OUTPUT__0"), want, rtol=1e-5, atol=1e-5
    )
    grpc.close()

    with RequestLoop(router, "iris", expected(modules[1], ROW)) as loop:
        lag_up = follow_scale(cluster, router, namespace, "iris", 3)
        wait_ready(cluster, namespace, "iris", replicas=3)
        time.sleep(1)  # let the loop use the new endpoints before they go
        lag_down = follow_scale(cluster, router, namespace, "iris", 1)
        wait_for(
            "the scaled-down pods to be gone", lambda: len(serving_pods(cluster, namespace, "iris")) == 1, 120
        )
    print(
        f"scale 1→3→1 under a request loop: {loop.ok} answers, {len(loop.failures)} failures; "
        f"router lag behind the EndpointSlices: up {lag_up * 1000:.0f} ms, down {lag_down * 1000:.0f} ms"
    )
    assert loop.ok > 0
    assert loop.failures == []


def test_canary_split_from_the_modeldeployment_spec(
    cluster: Cluster,
    serving_namespace: str,
    operator: OperatorProcess,
    model_registry: tuple[RegistryProcess, Any],
    start_router: Callable[..., RouterProcess],
) -> None:
    namespace = serving_namespace
    _, modules = model_registry
    spec = plain_spec(1, replicas=1, traffic={"canary": {"version": 2, "percent": 20}})
    cluster.apply(md_manifest("iris", spec), namespace)
    wait_ready(cluster, namespace, "iris", replicas=1)
    wait_for("a ready canary pod", lambda: serving_pods(cluster, namespace, "iris", role="canary"), 120)
    router = start_router(namespace)

    def both_versions() -> bool:
        for model in router.routable():
            if model["key"] == f"{namespace}/iris":
                return all(model["endpoints"].get(v) for v in ("1", "2"))
        return False

    wait_for("the router to route both versions", both_versions, 120)
    stable, canary = expected(modules[1], ROW), expected(modules[2], ROW)

    def send(count: int) -> list[str]:
        seen = []
        with httpx.Client(base_url=router.url, timeout=30.0) as client:
            for _ in range(count):
                response = client.post("/v2/models/iris/infer", json=infer_body(ROW))
                assert response.status_code == 200, response.text
                out = output_of(response)
                if np.allclose(out, stable, rtol=1e-5, atol=1e-5):
                    seen.append("stable")
                elif np.allclose(out, canary, rtol=1e-5, atol=1e-5):
                    seen.append("canary")
                else:
                    seen.append("neither")
        return seen

    with ThreadPoolExecutor(4) as pool:  # 4 clients share the 2,000 requests (bounded wall time)
        labels = [label for part in pool.map(send, [500] * 4) for label in part]
    counts = {key: labels.count(key) for key in ("stable", "canary", "neither")}
    assert len(labels) == 2000
    share = counts["canary"] / 20
    print(f"canary share from the ModelDeployment's 20%: {share:.2f}% of 2000 ({counts})")
    assert counts["neither"] == 0
    assert 17.0 <= share <= 23.0


def router_kubeconfig(cluster: Cluster, namespace: str, path: Path) -> Path:
    """A kubeconfig for the router's ServiceAccount: the cluster's server and CA, the SA's token."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    token = cluster.kubectl(
        "create", "token", "modelplane-router", "-n", namespace, "--duration=1h"
    ).stdout.strip()
    cluster_entry = dict(admin["clusters"][0]["cluster"])
    authority = cluster_entry.get("certificate-authority")
    if authority and not Path(authority).is_absolute():
        cluster_entry["certificate-authority"] = str((cluster.kubeconfig.parent / authority).resolve())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster_entry}],
        "users": [{"name": "router", "user": {"token": token}}],
        "contexts": [{"name": "router", "context": {"cluster": "c", "user": "router"}}],
        "current-context": "router",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def router_rbac(cluster: Cluster, serving_namespace: str) -> Iterator[str]:
    """deploy/router/rbac.yaml applied with its ServiceAccount in the test's namespace."""
    documents = list(yaml.safe_load_all((REPO / "deploy" / "router" / "rbac.yaml").read_text()))
    for document in documents:
        if document["kind"] == "ServiceAccount":
            document["metadata"]["namespace"] = serving_namespace
        if document["kind"] == "ClusterRoleBinding":
            document["subjects"][0]["namespace"] = serving_namespace
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))
    try:
        yield serving_namespace
    finally:
        cluster.kubectl("delete", "clusterrolebinding,clusterrole", "modelplane-router", check=False)


def test_router_rbac_suffices_for_discovery_and_activation_and_allows_no_more(
    cluster: Cluster,
    router_rbac: str,
    operator: OperatorProcess,
    model_registry: tuple[RegistryProcess, Any],
    start_router: Callable[..., RouterProcess],
    tmp_path: Path,
) -> None:
    namespace = router_rbac
    _, modules = model_registry
    account = f"system:serviceaccount:{namespace}:modelplane-router"
    for verb, resource, allowed in (
        ("watch", "modeldeployments.modelplane.io", "yes"),
        ("watch", "endpointslices.discovery.k8s.io", "yes"),
        ("patch", "modeldeployments.modelplane.io", "no"),
        ("delete", "modeldeployments.modelplane.io", "no"),
        ("get", "secrets", "no"),
        ("patch", "deployments.apps", "no"),
    ):
        answer = cluster.kubectl(
            "auth", "can-i", verb, resource, f"--as={account}", "-n", namespace, check=False
        )
        assert answer.stdout.strip() == allowed, (verb, resource, answer.stdout, answer.stderr)
    scale = cluster.kubectl(
        "auth", "can-i", "patch", "modeldeployments.modelplane.io", "--subresource=scale", f"--as={account}",
        "-n", namespace, check=False,
    )  # fmt: skip
    assert scale.stdout.strip() == "yes"

    # A model scaled to zero: the router, with only its own token, holds the request, activates the
    # model through the scale subresource and answers once a pod is ready.
    spec = plain_spec(1, replicas=0, autoscaling={"mode": "none", "minReplicas": 0})
    cluster.apply(md_manifest("iris", spec), namespace)
    kubeconfig = router_kubeconfig(cluster, namespace, tmp_path / "router.kubeconfig")
    router = start_router(namespace, kubeconfig=kubeconfig)
    wait_for(
        "the router to list iris", lambda: any(m["key"] == f"{namespace}/iris" for m in router.routable()), 60
    )
    with httpx.Client(base_url=router.url, timeout=150.0) as client:
        response = client.post("/v2/models/iris/infer", json=infer_body(ROW))
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(output_of(response), expected(modules[1], ROW), rtol=1e-5, atol=1e-5)
    assert cluster.get_json("md", "iris", "-n", namespace)["spec"]["replicas"] == 1
    assert "Forbidden" not in router.log_tail(100_000)
