"""pytest fixtures for the operator suites: a registry holding a real model, the CRDs, a namespace.

Module-scoped where they are expensive (the registry), so each e2e module gets its own and
tears it down before the next module starts (no two suites' operators ever overlap).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelplane.testing.cluster import Cluster
from modelplane.testing.operator import ARTIFACT_SECRET, register_mlp
from modelplane.testing.registry import RegistryProcess

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def model_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RegistryProcess, dict[int, Any]]]:
    """A registry (SQLite) with model ``iris`` at versions 1 and 2 and alias ``production`` → 1."""
    base = tmp_path_factory.mktemp("operator-registry")
    server = RegistryProcess(
        database_url=f"sqlite:///{base / 'registry.db'}",
        artifact_root=base / "artifacts",
        log_path=base / "log",
    ).start()
    with server.client() as client:
        modules = register_mlp(client, base / "models", "iris", seeds=[1, 2])
        client.set_alias("iris", "production", 1)
    try:
        yield server, modules
    finally:
        server.stop()


@pytest.fixture(scope="module")
def read_token(model_registry: tuple[RegistryProcess, Any]) -> str:
    """A read-only registry token, the one serving pods download artifacts with."""
    server, _ = model_registry
    with server.client() as client:
        return client.create_token("serving-pods", scopes=["read"]).token


@pytest.fixture
def md_namespace(namespace: str, cluster: Cluster, read_token: str) -> str:
    """The test's namespace, with the Secret the serving pods download artifacts with."""
    cluster.kubectl(
        "create", "secret", "generic", ARTIFACT_SECRET, "-n", namespace, f"--from-literal=token={read_token}"
    )
    return namespace


@pytest.fixture(scope="module")
def crds(cluster_session: Cluster) -> None:
    """The generated CRDs, applied and Established."""
    cluster_session.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster_session.kubectl(
        "wait", "--for=condition=Established", "crd/modeldeployments.modelplane.io", "--timeout=60s"
    )
