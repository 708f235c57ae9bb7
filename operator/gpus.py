"""GPU products: from the families users write (``H100``) to GPU Feature Discovery label values.

Node affinity can only match exact label values, so each family expands to the product strings
NVIDIA's GPU Feature Discovery publishes in ``nvidia.com/gpu.product``. Anything that is not a known
family is taken as an exact label value, so new products work without a release.
"""

from __future__ import annotations

from typing import Any

PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT_KEY = "nvidia.com/gpu"

FAMILIES: dict[str, tuple[str, ...]] = {
    "H200": ("NVIDIA-H200", "NVIDIA-H200-NVL", "NVIDIA-H200-141GB-HBM3e"),
    "H100": ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL", "NVIDIA-H100-SXM5-80GB"),
    "A100": (
        "NVIDIA-A100-SXM4-80GB",
        "NVIDIA-A100-SXM4-40GB",
        "NVIDIA-A100-PCIE-40GB",
        "NVIDIA-A100-80GB-PCIe",
    ),
    "L40S": ("NVIDIA-L40S",),
    "L4": ("NVIDIA-L4",),
    "A10G": ("NVIDIA-A10G",),
    "A10": ("NVIDIA-A10",),
    "T4": ("Tesla-T4",),
    "V100": ("Tesla-V100-SXM2-16GB", "Tesla-V100-SXM2-32GB", "Tesla-V100-PCIE-16GB"),
}


def product_labels(gpu_type: str) -> tuple[str, ...]:
    """The ``nvidia.com/gpu.product`` values a type stands for (a family, or itself)."""
    return FAMILIES.get(gpu_type.upper(), (gpu_type,))


def gpu_node_affinity(types: list[str]) -> dict[str, Any] | None:
    """Node affinity that requires one of ``types`` and prefers them in the order given.

    Weights fall from 100 in steps, so the scheduler places a pod on the first type that has room
    and falls back to the next one only when it must.
    """
    if not types:
        return None
    allowed: list[str] = []
    preferred: list[dict[str, Any]] = []
    for rank, gpu_type in enumerate(types):
        labels = [label for label in product_labels(gpu_type) if label not in allowed]
        allowed.extend(labels)
        if labels:
            preferred.append(
                {
                    "weight": max(1, 100 - rank * (100 // max(len(types), 1))),
                    "preference": {
                        "matchExpressions": [{"key": PRODUCT_LABEL, "operator": "In", "values": labels}]
                    },
                }
            )
    return {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": PRODUCT_LABEL, "operator": "In", "values": allowed}]}
            ]
        },
        "preferredDuringSchedulingIgnoredDuringExecution": preferred,
    }
