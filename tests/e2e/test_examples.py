"""Every plain-Kubernetes manifest in deploy/examples/kubernetes/ applies and reaches its goal on the cluster
(the ModelDeployment examples beside it are run by the operator suite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelplane.testing.cluster import Cluster

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "kubernetes"


def _wait(cluster: Cluster, namespace: str, condition: str, kind: str) -> None:
    cluster.kubectl(
        "wait", "-n", namespace, f"--for=condition={condition}", kind, "--all", "--timeout=90s", timeout=120
    )


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_reaches_its_goal(cluster: Cluster, namespace: str, example: str) -> None:
    path = str(EXAMPLES / example)
    cluster.kubectl("apply", "-n", namespace, "-f", path)
    listed = cluster.get_json("-n", namespace, "-f", path)
    kinds = {item["kind"] for item in listed.get("items", [listed])}
    assert kinds & {"Deployment", "Job"}, f"{example}: no workload to check"
    if "Deployment" in kinds:
        _wait(cluster, namespace, "Available", "deployment")
    if "Job" in kinds:
        _wait(cluster, namespace, "Complete", "job")
    if example == "gpu-job.yaml":
        assert cluster.kubectl("logs", "-n", namespace, "job/gpu-job").stdout.startswith("GPU ")
