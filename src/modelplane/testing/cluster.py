"""pytest plugin: a Kubernetes cluster for e2e tests, and a fresh namespace per test.

- ``cluster`` (session): the cluster named by ``$KUBECONFIG`` when that is set (so the same suite
  runs against any real cluster), else a dev cluster started once for the session (with a kwok
  fleet of fake GPU nodes when kwok is built) and stopped at the end.
- ``namespace``: a new namespace per test, deleted after it. When the test failed, the tail of every
  control-plane component's log and of every pod's log in that namespace is printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelplane.devcluster import build
from modelplane.devcluster import cluster as devcluster

KWOK_NODES = 100


@dataclass
class Cluster:
    """A cluster under test, driven with a real ``kubectl``."""

    kubeconfig: Path
    kubectl_path: str
    state_dir: Path | None = None
    kwok_nodes: int = 0

    @property
    def local(self) -> bool:
        """Whether this is a dev cluster on this machine (pod IPs, processes and logs are local)."""
        return self.state_dir is not None

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def helm(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the cached Helm 3 (``make cluster-bins`` builds it) against this cluster."""
        helm = build.binary_path(build.helm_component(), "helm")
        binary = str(helm) if helm.is_file() else shutil.which("helm")
        if binary is None:
            raise AssertionError("no helm: run `make cluster-bins` (builds one) or put helm on PATH")
        return subprocess.run(
            [binary, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def add_nodes(self, mix: str) -> list[str]:
        """Grow the dev cluster by the nodes of ``mix`` (e.g. ``h100:4``); returns their names, Ready."""
        if self.state_dir is None:
            raise AssertionError("adding nodes needs the dev cluster")
        return devcluster.add_nodes(self.state_dir, mix)

    def remove_nodes(self, names: list[str]) -> None:
        if self.state_dir is not None:
            devcluster.remove_nodes(self.state_dir, names)

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    def apply(self, manifest: dict[str, Any] | str, namespace: str) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.kubectl("apply", "-n", namespace, "-f", "-", input=text)

    def log_tails(self, namespace: str | None = None, lines: int = 40) -> str:
        """Tails of the component logs and of the pod logs (of ``namespace``, or all)."""
        if self.state_dir is None:
            return ""
        out: list[str] = []
        for path in sorted((self.state_dir / "logs").glob("*.log")):
            out.append(f"----- {path.name} -----\n{devcluster.log_tail(path, lines)}")
        pods = self.state_dir / "pods"
        pattern = f"{namespace}_*" if namespace else "*"
        for path in sorted(pods.glob(f"{pattern}/logs/*.log")) if pods.is_dir() else []:
            out.append(
                f"----- pod {path.parent.parent.name} / {path.stem} -----\n{devcluster.log_tail(path, lines)}"
            )
        return "\n".join(out)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy (returned), bounded by ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _kubectl_binary() -> str:
    component = build.kubernetes_component()
    path = build.binary_path(component, "kubectl")
    if path.is_file():
        return str(path)
    found = shutil.which("kubectl")
    if found is None:
        raise pytest.UsageError("no kubectl: run `make cluster-bins` (builds one) or put kubectl on PATH")
    return found


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"_modelplane_report_{report.when}", report)
    return report


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    external = os.environ.get("KUBECONFIG")
    if external:
        # A dev cluster's own kubeconfig sits in its state directory: then its pods are local too.
        state = devcluster.ClusterState.load(Path(external).resolve().parent)
        yield Cluster(
            kubeconfig=Path(external),
            kubectl_path=_kubectl_binary(),
            state_dir=state.directory if state is not None else None,
            kwok_nodes=state.kwok_nodes if state is not None else 0,
        )
        return
    try:
        build.bin_dirs(build.core_components())
    except build.BuildError as exc:
        pytest.fail(f"{exc}", pytrace=False)
    kwok_built = not build.missing((build.kwok_component(),))
    directory = tmp_path_factory.mktemp("dev-cluster")
    nodes = KWOK_NODES if kwok_built else 0
    # The cluster's processes run in their own sessions; a SIGTERM to pytest (a CI timeout, say),
    # even while the cluster is still starting, must still run the teardown below.
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            state = devcluster.up(
                directory, kwok_nodes=nodes, owner_pid=os.getpid(), report=lambda m: print(m, file=sys.stderr)
            )
        except devcluster.ClusterError as exc:
            pytest.fail(f"the dev cluster did not start: {exc}", pytrace=False)
        yield Cluster(
            kubeconfig=state.kubeconfig, kubectl_path=_kubectl_binary(), state_dir=directory, kwok_nodes=nodes
        )
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping must not be cut short
        try:
            devcluster.down(directory, keep=True, report=lambda m: None)
        finally:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def cluster(cluster_session: Cluster) -> Cluster:
    """The cluster under test (session-wide); see the module docstring."""
    return cluster_session


@pytest.fixture
def namespace_factory(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    """Makes fresh namespaces (``factory(suffix)``), deleted after the test; on failure their logs
    are printed. Each one's ``default`` service account exists already."""
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    made: list[str] = []

    def make(suffix: str = "") -> str:
        name = f"{base[: 40 - len(suffix)]}{suffix}-{uuid.uuid4().hex[:6]}".replace("--", "-")
        cluster.kubectl("create", "namespace", name)
        made.append(name)
        wait_for(
            f"service account default in {name}",
            lambda: (
                cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0
            ),
            timeout=30,
        )
        return name

    try:
        yield make
    finally:
        failed = any(
            getattr(getattr(request.node, f"_modelplane_report_{when}", None), "failed", False)
            for when in ("setup", "call")
        )
        for name in made:
            if failed and cluster.local:
                print(f"\n===== logs for failed test {request.node.name} in {name} =====", file=sys.stderr)
                print(cluster.log_tails(name), file=sys.stderr)
            cluster.kubectl(
                "delete", "namespace", name, "--wait=true", "--timeout=90s", check=False, timeout=120
            )


@pytest.fixture
def namespace(namespace_factory: Callable[[str], str]) -> str:
    """A fresh namespace, deleted after the test; its ``default`` service account exists already."""
    return namespace_factory("")
