"""The operator on a real control plane: from `kubectl apply` to GPU-scheduled pods that serve.

One registry (SQLite) holds two versions of a real TorchScript MLP; the operator runs as a process
against the test cluster; the node agent runs the serving pods' commands, so pods really load the
model and answer tritonclient.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml

from modelplane.api.v1alpha1 import ModelDeploymentSpec
from modelplane.operator.children import OperatorSettings, replicas_for
from modelplane.testing.cluster import Cluster, wait_for
from modelplane.testing.modeldeployments import (
    condition,
    expected,
    get_md,
    md_manifest,
    serving_pods,
    wait_ready,
)
from modelplane.testing.operator import ARTIFACT_SECRET, OperatorProcess
from modelplane.testing.registry import RegistryProcess

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "deploy" / "examples"


@pytest.fixture
def namespace(namespace: str, cluster: Cluster, read_token: str) -> str:
    """The test's namespace, with the Secret the serving pods download artifacts with."""
    cluster.kubectl(
        "create", "secret", "generic", ARTIFACT_SECRET, "-n", namespace, f"--from-literal=token={read_token}"
    )
    return namespace


def infer(pod_ip: str, batch: np.ndarray) -> np.ndarray:
    client = httpclient.InferenceServerClient(f"{pod_ip}:8000", connection_timeout=10, network_timeout=30)
    inputs = [httpclient.InferInput("INPUT__0", list(batch.shape), "FP32")]
    inputs[0].set_data_from_numpy(batch)
    result = client.infer("iris", inputs, outputs=[httpclient.InferRequestedOutput("OUTPUT__0")])
    output: np.ndarray = result.as_numpy("OUTPUT__0")
    return output


BATCH = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)


def test_example_becomes_ready_serves_the_model_and_shows_every_column(
    cluster: Cluster, namespace: str, operator: OperatorProcess, model_registry: tuple[RegistryProcess, Any]
) -> None:
    _, modules = model_registry
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "iris.yaml"))
    md = wait_ready(cluster, namespace, "iris", replicas=2)
    assert md["status"]["model"]["version"] == 1
    assert md["status"]["model"]["artifactDigest"].startswith("sha256:")
    table = cluster.kubectl("get", "md", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODEL", "VERSION", "READY", "GPUS", "URL", "AGE"]
    row = table[1].split()
    assert row[:5] == ["iris", "iris", "1", "2/2", "2"]
    assert row[5] == f"http://iris.{namespace}.svc.cluster.local:8000"
    pods = serving_pods(cluster, namespace, "iris")
    assert len(pods) == 2
    for pod in pods:
        np.testing.assert_allclose(
            infer(pod["status"]["podIP"], BATCH), expected(modules[1], BATCH), rtol=1e-5, atol=1e-5
        )
    kinds = {item["kind"] for item in cluster.get_json("deploy,svc,pdb", "-n", namespace)["items"]}
    assert kinds == {"Deployment", "Service", "PodDisruptionBudget"}


def test_kubectl_scale_goes_through_the_scale_subresource(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(
        md_manifest(
            "iris",
            {
                "model": {"name": "iris", "version": 1},
                "replicas": 1,
                "resources": {"gpu": {"count": 0}},
                "autoscaling": {"mode": "none"},
            },
        ),
        namespace,
    )
    wait_ready(cluster, namespace, "iris", replicas=1)
    cluster.kubectl("scale", "md/iris", "-n", namespace, "--replicas=3")
    md = wait_ready(cluster, namespace, "iris", replicas=3)
    assert md["status"]["ready"] == "3/3"
    assert len(serving_pods(cluster, namespace, "iris")) == 3


def test_unknown_model_is_reported_and_creates_nothing(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(
        md_manifest("ghost", {"model": {"name": "no-such-model", "alias": "production"}}), namespace
    )

    def reported() -> dict[str, Any] | None:
        found = condition(get_md(cluster, namespace, "ghost"), "ModelResolved")
        return found if found.get("status") == "False" else None

    resolved = wait_for("ModelResolved=False", reported, timeout=60)
    assert resolved["reason"] in ("ModelNotFound", "AliasNotFound")
    assert "no-such-model" in resolved["message"]
    assert cluster.get_json("deploy,svc,pdb", "-n", namespace)["items"] == []
    events = cluster.get_json("events", "-n", namespace, "--field-selector", "involvedObject.name=ghost")[
        "items"
    ]
    assert any(e["reason"] == resolved["reason"] for e in events)


def test_gpu_types_prefer_the_first_and_fall_back_to_the_next(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(
        md_manifest(
            "pref",
            {
                "model": {"name": "iris", "version": 1},
                "replicas": 1,
                "resources": {"gpu": {"count": 1, "types": ["H100", "A100"]}},
                "autoscaling": {"mode": "none", "maxReplicas": 8},
            },
        ),
        namespace,
    )
    wait_ready(cluster, namespace, "pref", replicas=1)
    nodes = {n["metadata"]["name"]: n for n in cluster.get_json("nodes")["items"]}

    def products() -> list[str]:
        return [
            nodes[p["spec"]["nodeName"]]["metadata"]["labels"]["nvidia.com/gpu.product"]
            for p in serving_pods(cluster, namespace, "pref")
        ]

    assert products() == ["NVIDIA-H100-80GB-HBM3"]
    free_h100 = sum(
        int(n["status"]["allocatable"].get("nvidia.com/gpu", 0))
        for n in nodes.values()
        if n["metadata"]["labels"].get("nvidia.com/gpu.product") == "NVIDIA-H100-80GB-HBM3"
        and n["metadata"]["labels"].get("type") != "kwok"
    )
    cluster.kubectl("scale", "md/pref", "-n", namespace, f"--replicas={free_h100 + 1}")
    wait_ready(cluster, namespace, "pref", replicas=free_h100 + 1)
    placed = products()
    assert placed.count("NVIDIA-A100-SXM4-80GB") >= 1, placed
    assert placed.count("NVIDIA-H100-80GB-HBM3") >= 1, placed


def test_gpu_shortage_is_reported_by_the_scheduler_then_resolved_by_a_bigger_node(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    # Every H100 node of the dev cluster has one GPU: two per replica cannot be placed.
    cluster.apply(
        md_manifest(
            "big",
            {
                "model": {"name": "iris", "version": 1},
                "replicas": 1,
                "resources": {"gpu": {"count": 2, "types": ["H100"]}},
            },
        ),
        namespace,
    )

    def insufficient() -> dict[str, Any] | None:
        found = condition(get_md(cluster, namespace, "big"), "Scheduled")
        return found if found.get("reason") == "InsufficientGPU" else None

    scheduled = wait_for("Scheduled=False/InsufficientGPU", insufficient, timeout=90)
    assert scheduled["status"] == "False"
    assert "nvidia.com/gpu" in scheduled["message"]
    if not cluster.local:
        pytest.skip("adding a node needs the dev cluster")
    added = cluster.add_nodes("h100:4")
    try:
        wait_ready(cluster, namespace, "big", replicas=1, timeout=180)
        assert condition(get_md(cluster, namespace, "big"), "Scheduled")["status"] == "True"
    finally:
        cluster.kubectl(
            "delete", "namespace", namespace, "--wait=true", "--timeout=90s", check=False, timeout=120
        )
        cluster.remove_nodes(added)


def test_invalid_specs_are_rejected_by_kubectl_naming_the_field(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "missing model": ({}, "spec.model"),
        "version and alias": ({"model": {"name": "iris", "version": 1, "alias": "prod"}}, "exactly one of"),
        "negative replicas": ({"model": {"name": "iris", "version": 1}, "replicas": -1}, "spec.replicas"),
        "min above max": (
            {"model": {"name": "iris", "version": 1}, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            "minReplicas must not exceed",
        ),
        "percent 130": (
            {"model": {"name": "iris", "version": 1}, "traffic": {"canary": {"version": 2, "percent": 130}}},
            "spec.traffic.canary.percent",
        ),
        "unknown gpu field": (
            {"model": {"name": "iris", "version": 1}, "resources": {"gpu": {"cores": 2}}},
            "cores",
        ),
        "bad quantity": (
            {"model": {"name": "iris", "version": 1}, "resources": {"memory": "8 gigs"}},
            "spec.resources.memory",
        ),
        "unknown runtime": (
            {"model": {"name": "iris", "version": 1}, "runtime": {"name": "tensorflow"}},
            "spec.runtime.name",
        ),
        "storageUri without a signature": (
            {"model": {"name": "iris", "storageUri": "https://models.example.com/iris.pt"}},
            "storageUri needs a signature",
        ),
    }
    for label, (spec, field) in cases.items():
        result = cluster.kubectl(
            "apply", "-n", namespace, "-f", "-", input=json.dumps(md_manifest("bad", spec)), check=False
        )
        assert result.returncode != 0, f"{label}: accepted"
        assert field in result.stderr, f"{label}: {result.stderr}"
    assert cluster.get_json("md", "-n", namespace)["items"] == []


#: The operator's default ``--drain-delay-seconds``: a pod seen ready answers for this long after
#: it starts terminating.
LAME_DUCK_SECONDS = OperatorSettings().drain_delay_seconds


def test_version_change_rolls_without_a_failed_request(
    cluster: Cluster, namespace: str, operator: OperatorProcess, model_registry: tuple[RegistryProcess, Any]
) -> None:
    _, modules = model_registry
    spec = {
        "model": {"name": "iris", "version": 1},
        "replicas": 2,
        "resources": {"gpu": {"count": 0}},
        "autoscaling": {"mode": "none"},
    }
    cluster.apply(md_manifest("roll", spec), namespace)
    wait_ready(cluster, namespace, "roll", replicas=2)
    failures: list[str] = []
    answers = {1: 0, 2: 0}
    stop = threading.Event()
    want = {v: expected(m, BATCH) for v, m in modules.items()}

    def loop() -> None:
        deadline = time.monotonic() + 240
        while not stop.is_set() and time.monotonic() < deadline:
            listed_at = time.monotonic()
            pods = [p for p in serving_pods(cluster, namespace, "roll") if _ready(p)]
            for pod in pods:
                try:
                    out = infer(pod["status"]["podIP"], BATCH)
                except Exception as exc:  # any failure is what this test counts
                    if time.monotonic() - listed_at > LAME_DUCK_SECONDS:
                        continue  # a listing older than the promise: a client's own staleness
                    failures.append(f"{pod['metadata']['name']}: {exc}")
                    continue
                matched = [v for v, reference in want.items() if np.allclose(out, reference, atol=1e-5)]
                if len(matched) != 1:
                    failures.append("an answer matched neither version")
                else:
                    answers[matched[0]] += 1

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    time.sleep(2)
    spec["model"] = {"name": "iris", "version": 2}
    cluster.apply(md_manifest("roll", spec), namespace)
    wait_for(
        "version 2 rolled out",
        lambda: (
            get_md(cluster, namespace, "roll").get("status", {}).get("model", {}).get("version") == 2
            and condition(get_md(cluster, namespace, "roll"), "Ready").get("status") == "True"
        ),
        timeout=240,
    )
    time.sleep(2)
    stop.set()
    worker.join(timeout=60)
    assert failures == []
    assert answers[1] > 0
    assert answers[2] > 0


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", [])
    )


def test_a_restarted_operator_resumes_without_writing_to_children(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(
        md_manifest(
            "calm",
            {
                "model": {"name": "iris", "version": 1},
                "replicas": 1,
                "resources": {"gpu": {"count": 0}},
                "autoscaling": {"mode": "none"},
            },
        ),
        namespace,
    )
    wait_ready(cluster, namespace, "calm", replicas=1)
    before = {
        i["metadata"]["name"] + i["kind"]: i["metadata"]["resourceVersion"]
        for i in cluster.get_json("deploy,svc,pdb", "-n", namespace)["items"]
    }
    operator.stop()
    operator.start()
    # The resume handler reconciles every ModelDeployment; then 50 more reconciles of this one,
    # each triggered by a metadata change that leaves the spec as it is.
    wait_for("the resume reconcile", lambda: operator.metric("modelplane_operator_reconciles_total") >= 1)
    for i in range(50):
        done = operator.metric("modelplane_operator_reconciles_total")
        cluster.kubectl("annotate", "md/calm", "-n", namespace, f"example.com/touch={i}", "--overwrite")

        def reconciled(done: float = done) -> bool:
            return operator.metric("modelplane_operator_reconciles_total") > done

        wait_for(f"reconcile {i + 1}", reconciled)
    after = {
        i["metadata"]["name"] + i["kind"]: i["metadata"]["resourceVersion"]
        for i in cluster.get_json("deploy,svc,pdb", "-n", namespace)["items"]
    }
    assert after == before
    assert operator.metric("modelplane_operator_child_writes_total") == 0


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_modeldeployment_examples_work_as_written(
    cluster: Cluster, namespace: str, operator: OperatorProcess, example: str
) -> None:
    document = yaml.safe_load((EXAMPLES / example).read_text())
    assert document["kind"] == "ModelDeployment"
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / example))
    spec = document["spec"]
    # What the example asks for: spec.replicas (default 1) within its autoscaling bounds.
    replicas = replicas_for(ModelDeploymentSpec.model_validate(spec), "stable")
    md = wait_ready(cluster, namespace, document["metadata"]["name"], replicas=replicas)
    canary = spec.get("traffic", {}).get("canary")
    if canary:
        assert [t["role"] for t in md["status"]["traffic"]] == ["stable", "canary"]
        assert len(serving_pods(cluster, namespace, document["metadata"]["name"], role="canary")) >= 1
