"""kwok fleets: hundreds of fake GPU nodes for tests that need scheduling, not serving.

kwok manages only nodes annotated ``kwok.x-k8s.io/node=fake`` (so it never touches the node
agent's nodes) and plays their kubelets with the stages shipped in kwok's own module (read from
the Go module cache, at the pinned version): nodes become Ready, pods bound to them go Running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelplane.devcluster import build, nodes, versions
from modelplane.devcluster.kube import Api, ApiError

FAKE_ANNOTATION = "kwok.x-k8s.io/node"
STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
KWOK_PRODUCT = "h100"
KWOK_GPUS = 8


def node_name(index: int) -> str:
    return f"kwok-gpu-{index}"


def stages_text(root: Path | None = None) -> str:
    """kwok's stage configuration, from its module source in the Go module cache."""
    module = (root or build.cache_root()) / "go" / "mod" / "sigs.k8s.io" / f"kwok@{versions.KWOK}"
    parts = []
    for rel in STAGE_FILES:
        path = module / rel
        if not path.is_file():
            raise build.BuildError(
                f"kwok stage file {path} is missing; run `modelplane dev-cluster build --all`."
            )
        parts.append(path.read_text())
    return "\n---\n".join(parts)


def command(binary: Path, kubeconfig: str, stages: Path) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--config={stages}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={FAKE_ANNOTATION}=fake",
        "--server-address=",
        "--node-ip=127.0.0.1",
        "--cidr=10.64.0.0/12",
        "--node-lease-duration-seconds=40",
    ]


def node_object(index: int) -> dict[str, Any]:
    spec = nodes.NodeSpec(name=node_name(index), gpus=KWOK_GPUS, product=KWOK_PRODUCT, gpu_taint=False)
    body = nodes.node_object(spec)
    labels = body["metadata"]["labels"]
    labels.pop(nodes.DEV_NODE_LABEL, None)
    labels["type"] = "kwok"
    body["metadata"]["annotations"] = {FAKE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"}
    body["spec"]["taints"] = [{"key": FAKE_ANNOTATION, "value": "fake", "effect": "NoSchedule"}]
    return body


def create_nodes(api: Api, count: int) -> None:
    """Create the fake nodes and set their capacity (kwok's stages keep it and add the conditions)."""
    for i in range(count):
        try:
            api.post("/api/v1/nodes", node_object(i))
        except ApiError as exc:
            if exc.status != 409:
                raise
        cap = nodes.capacity(nodes.NodeSpec(name=node_name(i), gpus=KWOK_GPUS, product=KWOK_PRODUCT))
        api.patch(f"/api/v1/nodes/{node_name(i)}/status", {"status": {"capacity": cap, "allocatable": cap}})
