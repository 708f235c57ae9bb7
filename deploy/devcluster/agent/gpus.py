"""GPU index assignment, the way the NVIDIA device plugin hands out devices.

Each container asking for ``nvidia.com/gpu`` gets that many whole devices of its node, lowest free
indices first, exclusively, for as long as its pod lives; the indices reach the process as
``NVIDIA_VISIBLE_DEVICES`` (comma-separated), as the NVIDIA container runtime would set them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"


def requested(container: dict[str, Any]) -> int:
    """GPUs a container asks for (extended resources: the limit, else the request; they must match)."""
    resources = container.get("resources") or {}
    for section in ("limits", "requests"):
        value = (resources.get(section) or {}).get(GPU_RESOURCE)
        if value is not None:
            return int(str(value))
    return 0


def assign(total: int, used: Iterable[int], count: int) -> list[int] | None:
    """Lowest ``count`` free indices in ``range(total)``, or None when too few are free."""
    if count <= 0:
        return []
    taken = set(used)
    free = [i for i in range(total) if i not in taken]
    if len(free) < count:
        return None
    return free[:count]


def visible_devices(indices: list[int]) -> str:
    return ",".join(str(i) for i in indices)
