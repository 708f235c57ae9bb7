"""Test nodes: the mix syntax, and the Node objects (labels, taints, capacity) the agent registers.

A mix is a comma-separated list of ``PRODUCT:GPUS*COUNT`` (``*COUNT`` optional, default 1), or
``cpu*COUNT`` for nodes without GPUs. The default, ``h100:1*2,a100:4,cpu``, gives two nodes with
one H100 each, one node with four A100s and one CPU-only node. Labels follow NVIDIA's GPU Feature
Discovery, so node selectors written for a real GPU cluster select the same nodes here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_MIX = "h100:1*2,a100:4,cpu"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
DEV_NODE_LABEL = "modelplane.io/dev-node"

# product name as GPU Feature Discovery reports it, memory in MiB
PRODUCTS: dict[str, tuple[str, int]] = {
    "h100": ("NVIDIA-H100-80GB-HBM3", 81559),
    "h200": ("NVIDIA-H200", 143771),
    "a100": ("NVIDIA-A100-SXM4-80GB", 81920),
    "l4": ("NVIDIA-L4", 23034),
    "t4": ("Tesla-T4", 15360),
}


class MixError(ValueError):
    """A node mix that cannot be parsed; the message shows the expected syntax."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    gpus: int = 0
    product: str = ""
    cpu: str = "8"
    memory: str = "32Gi"
    pods: str = "110"
    gpu_taint: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeSpec:
        return cls(**data)


def parse_mix(mix: str, gpu_taint: bool = False) -> list[NodeSpec]:
    """``"h100:1*2,a100:4,cpu"`` -> node specs with stable names (``gpu-h100-0``, ``cpu-0``, ...)."""
    specs: list[NodeSpec] = []
    counters: dict[str, int] = {}
    syntax = (
        f"expected entries like 'h100:1*2' (PRODUCT:GPUS*COUNT) or 'cpu*2'; products: {', '.join(PRODUCTS)}"
    )
    for raw in mix.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        body, _, count_text = entry.partition("*")
        try:
            count = int(count_text) if count_text else 1
        except ValueError:
            raise MixError(f"bad node count in {raw.strip()!r}: {syntax}") from None
        if count < 1 or count > 100:
            raise MixError(f"node count in {raw.strip()!r} must be 1..100")
        if body == "cpu":
            product, gpus = "", 0
        else:
            product, _, gpus_text = body.partition(":")
            if product not in PRODUCTS:
                raise MixError(f"unknown GPU product {product!r} in {raw.strip()!r}: {syntax}")
            try:
                gpus = int(gpus_text) if gpus_text else 1
            except ValueError:
                raise MixError(f"bad GPU count in {raw.strip()!r}: {syntax}") from None
            if gpus < 1 or gpus > 16:
                raise MixError(f"GPU count in {raw.strip()!r} must be 1..16")
        prefix = "cpu" if not product else f"gpu-{product}"
        for _ in range(count):
            index = counters.get(prefix, 0)
            counters[prefix] = index + 1
            specs.append(
                NodeSpec(
                    name=f"{prefix}-{index}", gpus=gpus, product=product, gpu_taint=gpu_taint and gpus > 0
                )
            )
    if not specs:
        raise MixError(f"the node mix is empty: {syntax}")
    return specs


def node_labels(spec: NodeSpec) -> dict[str, str]:
    labels = {
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        DEV_NODE_LABEL: "true",
    }
    if spec.gpus:
        product, memory = PRODUCTS[spec.product]
        labels.update(
            {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.memory": str(memory),
                "nvidia.com/gpu.count": str(spec.gpus),
            }
        )
    return labels


def capacity(spec: NodeSpec) -> dict[str, str]:
    cap = {"cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods, "ephemeral-storage": "100Gi"}
    if spec.gpus:
        cap[GPU_RESOURCE] = str(spec.gpus)
    return cap


def node_object(spec: NodeSpec) -> dict[str, Any]:
    """The Node as created (spec and metadata; status is written separately through /status)."""
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": node_labels(spec)},
        "spec": {},
    }
    if spec.gpu_taint:
        node["spec"]["taints"] = [dict(GPU_TAINT)]
    return node


def node_status(
    spec: NodeSpec, now: str, since: str, kubelet_version: str, ready: bool = True, kubelet_port: int = 0
) -> dict[str, Any]:
    """The Node's status as the agent reports it on every heartbeat (``since``: when it became ready)."""

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": since,
        }

    return {
        "capacity": capacity(spec),
        "allocatable": capacity(spec),
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": spec.name},
        ],
        "conditions": [
            condition(
                "MemoryPressure", "False", "KubeletHasSufficientMemory", "node agent has sufficient memory"
            ),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "node agent has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "node agent has sufficient PID"),
            condition(
                "Ready",
                "True" if ready else "False",
                "KubeletReady" if ready else "KubeletNotReady",
                "modelplane node agent is posting ready status",
            ),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "machineID": spec.name,
            "systemUUID": spec.name,
            "bootID": spec.name,
            "kernelVersion": "",
            "osImage": "modelplane dev cluster",
            "containerRuntimeVersion": "modelplane-process://1",
            "kubeletVersion": kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }
