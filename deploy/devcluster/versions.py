"""Pinned versions of everything the dev cluster builds: change them here and nowhere else."""

from __future__ import annotations

KUBERNETES = "v1.34.4"
"""The one Kubernetes release: kube-apiserver, controller-manager, scheduler and kubectl."""

ETCD = "v3.5.35"
HELM = "v3.19.4"
KWOK = "v0.7.0"


def staging_version(kubernetes: str = KUBERNETES) -> str:
    """The ``k8s.io/*`` staging modules of release ``v1.Y.Z`` are published as ``v0.Y.Z``."""
    major, minor, patch = kubernetes.lstrip("v").split(".")
    if major != "1":
        raise ValueError(f"unexpected Kubernetes release {kubernetes!r}; expected v1.Y.Z")
    return f"v0.{minor}.{patch}"


def major_minor(version: str) -> tuple[str, str]:
    """``v1.34.4`` -> ``("1", "34")``, as the version ldflags want them."""
    parts = version.lstrip("v").split(".")
    return parts[0], parts[1]
