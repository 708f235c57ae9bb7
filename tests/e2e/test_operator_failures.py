"""Honest conditions for serving pods in trouble, and an operator that never waits silently.

Each ModelDeployment below fails in one of the ways a user meets on a cluster (a wrong artifact
token, no token Secret, a command that exits, an image that cannot be pulled, a runtime that hangs
and fails its readiness probe); the node agent produces each failure for real, and the
ModelDeployment must name it within 60 s. They run side by side in one test to keep CI time down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelplane.local.processes import free_port
from modelplane.testing.cluster import Cluster, wait_for
from modelplane.testing.modeldeployments import condition, get_md, md_manifest, serving_pods, wait_ready
from modelplane.testing.operator import ARTIFACT_SECRET, OperatorProcess
from modelplane.testing.registry import ADMIN_TOKEN, RegistryProcess

pytestmark = pytest.mark.e2e

#: The issue's bound: a failure shows on the ModelDeployment within this long of the pod failing.
REPORTED_WITHIN_S = 60.0
IRIS = {"name": "iris", "version": 1}


def _reason(cluster: Cluster, namespace: str, name: str, kind: str, reason: str) -> dict[str, Any] | None:
    md = get_md(cluster, namespace, name)
    found = condition(md, kind)
    return found if found.get("reason") == reason else None


def _failed_pod_since(cluster: Cluster, namespace: str, name: str) -> float:
    """Wait until a serving pod of ``name`` exists and has a failed or waiting container; now."""

    def troubled() -> bool:
        for pod in serving_pods(cluster, namespace, name):
            statuses = [
                *(pod.get("status", {}).get("initContainerStatuses") or []),
                *(pod.get("status", {}).get("containerStatuses") or []),
            ]
            for status in statuses:
                waiting = (status.get("state") or {}).get("waiting") or {}
                failed = ((status.get("lastState") or {}).get("terminated") or {}).get("exitCode", 0)
                if waiting.get("reason") not in (None, "PodInitializing", "ContainerCreating") or failed:
                    return True
        return False

    wait_for(f"a failing pod of {name}", troubled, timeout=120)
    return time.monotonic()


def test_each_pod_failure_is_named_on_the_model_deployment(
    cluster: Cluster,
    operator: OperatorProcess,
    serving_namespace: str,
    namespace_factory: Callable[[str], str],
    model_registry: tuple[RegistryProcess, Any],
) -> None:
    ok_ns = serving_namespace
    # A namespace whose token Secret holds a token the registry does not know.
    bad_token_ns = namespace_factory("badtoken")
    cluster.kubectl(
        "create", "secret", "generic", ARTIFACT_SECRET, "-n", bad_token_ns, "--from-literal=token=not-a-token"
    )
    # A namespace without the Secret the operator mounts.
    no_secret_ns = namespace_factory("nosecret")

    crash = {"model": IRIS, "runtime": {"args": ["--no-such-flag"]}, "progressDeadlineSeconds": 10}
    pull = {"model": IRIS, "runtime": {"image": "registry.invalid/modelplane/runtime:0"}}
    cluster.apply(md_manifest("crash", crash), ok_ns)
    cluster.apply(md_manifest("pull", pull), ok_ns)
    cluster.apply(md_manifest("probe", {"model": IRIS}), ok_ns)
    cluster.apply(md_manifest("download", {"model": IRIS}), bad_token_ns)
    cluster.apply(md_manifest("secret", {"model": IRIS}), no_secret_ns)

    cases = [
        (bad_token_ns, "download", "ModelDownloadFailed", "HTTP 401"),
        (no_secret_ns, "secret", "SecretNotFound", f"kubectl create secret generic {ARTIFACT_SECRET}"),
        (ok_ns, "crash", "CrashLoopBackOff", "--no-such-flag"),
        (ok_ns, "pull", "ImagePullBackOff", "registry.invalid/modelplane/runtime:0"),
    ]
    for ns, name, reason, words in cases:
        failed_at = _failed_pod_since(cluster, ns, name)

        def reported(ns: str = ns, name: str = name, reason: str = reason) -> dict[str, Any] | None:
            return _reason(cluster, ns, name, "Ready", reason)

        ready = wait_for(
            f"{name}: Ready=False {reason}",
            reported,
            timeout=max(1.0, REPORTED_WITHIN_S - (time.monotonic() - failed_at)),
        )
        assert ready["status"] == "False"
        assert words in ready["message"], ready["message"]
        available = condition(get_md(cluster, ns, name), "Available")
        assert (available["status"], available["reason"]) == ("False", reason)

    # A Warning Event names the reason too (what `kubectl describe md` shows).
    events = cluster.get_json("events", "-n", bad_token_ns)["items"]
    assert any(e["reason"] == "ModelDownloadFailed" and e["type"] == "Warning" for e in events)

    # The crash-looping rollout runs past its 10 s deadline: Progressing turns False.
    deadline = wait_for(
        "crash: Progressing=False ProgressDeadlineExceeded",
        lambda: _reason(cluster, ok_ns, "crash", "Progressing", "ProgressDeadlineExceeded"),
        timeout=REPORTED_WITHIN_S,
    )
    assert deadline["status"] == "False"

    # A pod that served and then hangs: its readiness probe times out (its liveness probe would
    # restart it some 30 s later). The node agent runs the container as a local process group.
    wait_ready(cluster, ok_ns, "probe", 1)
    (pod,) = serving_pods(cluster, ok_ns, "probe")
    (runtime,) = pod["status"]["containerStatuses"]
    group = int(runtime["containerID"].removeprefix("modelplane-process://"))
    os.killpg(group, signal.SIGSTOP)
    try:
        probing = wait_for(
            "probe: Ready=False ProbeFailing",
            lambda: _reason(cluster, ok_ns, "probe", "Ready", "ProbeFailing"),
            timeout=REPORTED_WITHIN_S,
        )
    finally:
        os.killpg(group, signal.SIGCONT)
    assert "readiness probe" in probing["message"]


def test_an_operator_without_its_peering_resource_exits_at_once_saying_what_to_do(
    cluster: Cluster, crds: None, model_registry: tuple[RegistryProcess, Any], tmp_path: Path
) -> None:
    server, _ = model_registry
    started = time.monotonic()
    command = [
        sys.executable, "-m", "modelplane", "operator",
        "--registry-url", server.url,
        "--peering", "no-such-peering",
        "--health-port", str(free_port()),
        "--metrics-port", str(free_port()),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "MODELPLANE_REGISTRY_TOKEN": ADMIN_TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - started < 10, "the operator must not wait for its peering resource"
    assert result.returncode == 2, result.stdout + result.stderr
    assert "ClusterKopfPeering 'no-such-peering' does not exist" in result.stderr
    assert "kubectl apply -f deploy/operator/peering.yaml" in result.stderr
    assert "--standalone" in result.stderr
