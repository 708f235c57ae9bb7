"""pytest fixtures for e2e suites that serve models on the test cluster (a plugin in ``tests/conftest.py``).

- ``model_registry`` (module): a registry on SQLite holding model ``iris`` versions 1 and 2 (real
  TorchScript MLPs from seeds 1 and 2; alias ``production`` → 1); yields the server and
  version → torch module.
- ``crds`` (module): the CRDs applied and Established.
- ``operator`` (module): ``modelplane operator`` against the cluster, resolving from that registry.
- ``serving_namespace``: the test's namespace with the Secret serving pods download artifacts with.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from modelplane.testing.cluster import Cluster
from modelplane.testing.operator import ARTIFACT_SECRET, OperatorProcess, register_mlp
from modelplane.testing.registry import ADMIN_TOKEN, RegistryProcess

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def model_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RegistryProcess, dict[int, Any]]]:
    base = tmp_path_factory.mktemp("serving-registry")
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
    server, _ = model_registry
    with server.client() as client:
        return client.create_token("serving-pods", scopes=["read"]).token


@pytest.fixture(scope="module")
def crds(cluster_session: Cluster) -> None:
    cluster_session.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster_session.kubectl(
        "wait", "--for=condition=Established", "crd/modeldeployments.modelplane.io", "--timeout=60s"
    )


@pytest.fixture(scope="module")
def operator(
    cluster_session: Cluster,
    crds: None,
    model_registry: tuple[RegistryProcess, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    server, _ = model_registry
    with running_operator(cluster_session, server, tmp_path_factory.mktemp("operator")) as process:
        yield process


@contextmanager
def running_operator(
    cluster: Cluster, registry: RegistryProcess, log_dir: Path, extra_args: Sequence[str] = ()
) -> Iterator[OperatorProcess]:
    """``modelplane operator`` against ``cluster``, resolving from ``registry``; its log tail is
    printed when it stops (pytest shows it for failed tests)."""
    process = OperatorProcess(
        kubeconfig=cluster.kubeconfig,
        registry_url=registry.url,
        registry_token=ADMIN_TOKEN,
        log_path=log_dir / "operator.log",
        extra_args=["--artifact-token-secret", ARTIFACT_SECRET, *extra_args],
    ).start()
    try:
        yield process
    finally:
        process.stop()
        print(f"\n----- operator log -----\n{process.log_tail()}")


@pytest.fixture
def serving_namespace(namespace: str, cluster: Cluster, read_token: str) -> str:
    """The test's namespace, with the Secret the serving pods download artifacts with."""
    cluster.kubectl(
        "create", "secret", "generic", ARTIFACT_SECRET, "-n", namespace, f"--from-literal=token={read_token}"
    )
    return namespace
