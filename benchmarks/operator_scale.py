"""Operator at scale: N ModelDeployments applied at once, time until every one is Ready.

The pods land on kwok's fake GPU nodes (kwok marks them Running and Ready), so the run measures
the operator and the control plane, not model loading. It starts a dev cluster with a kwok fleet
(or uses ``--kubeconfig``), a registry holding a real TorchScript model, and ``modelplane operator``
as a process; then applies N ModelDeployments in one ``kubectl apply`` and polls until all are
Ready. It prints time-to-all-Ready, the operator's peak RSS (``VmHWM``) and its reconcile and
child-write counters. There is no peer to run beside it: no other ModelDeployment operator runs
here, so the figures are raw, with the per-object cost as the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from modelplane.devcluster import cluster as devcluster
from modelplane.testing.cluster import Cluster, _kubectl_binary
from modelplane.testing.modeldeployments import md_manifest
from modelplane.testing.operator import OperatorProcess, register_mlp
from modelplane.testing.registry import ADMIN_TOKEN, RegistryProcess

REPO = Path(__file__).resolve().parents[1]
KWOK_PLACEMENT = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}


def spec() -> dict[str, Any]:
    return {
        "model": {"name": "iris", "version": 1},
        "replicas": 1,
        "resources": {"gpu": {"count": 1}},
        "scheduling": KWOK_PLACEMENT,
        "autoscaling": {"mode": "none"},
    }


def peak_rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of ``pid`` in MiB, from /proc (Linux)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def ready_count(cluster: Cluster, namespace: str) -> int:
    items = cluster.get_json("md", "-n", namespace)["items"]
    done = 0
    for md in items:
        status = md.get("status", {})
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        if conditions.get("Ready") == "True" and status.get("readyReplicas") == 1:
            done += 1
    return done


def run(cluster: Cluster, count: int, timeout: float, work: Path) -> None:
    registry = RegistryProcess(
        database_url=f"sqlite:///{work / 'registry.db'}",
        artifact_root=work / "artifacts",
        log_path=work / "reg.log",
    ).start()
    operator = OperatorProcess(
        kubeconfig=cluster.kubeconfig,
        registry_url=registry.url,
        registry_token=ADMIN_TOKEN,
        log_path=work / "operator.log",
    )
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    try:
        with registry.client() as client:
            register_mlp(client, work / "models", "iris", seeds=[1])
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.modelplane.io")
        cluster.kubectl("create", "namespace", namespace)
        operator.start()
        assert operator.process is not None
        _, idle_peak = peak_rss_mib(operator.process.pid)
        documents = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [md_manifest(f"m{i:03d}", spec()) for i in range(count)],
        }
        started = time.monotonic()
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(documents), timeout=300)
        applied = time.monotonic() - started
        done, rss = 0, 0.0
        while time.monotonic() - started < timeout:
            done = ready_count(cluster, namespace)
            rss = max(rss, peak_rss_mib(operator.process.pid)[0])
            if done == count:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        _, peak = peak_rss_mib(operator.process.pid)
        reconciles = operator.metric("modelplane_operator_reconciles_total")
        writes = operator.metric("modelplane_operator_child_writes_total")
        print(f"ModelDeployments:           {count} (1 replica, 1 GPU each, on kwok nodes)")
        print(f"kubectl apply returned in:  {applied:.1f}s")
        verdict = "yes" if done == count else f"NO ({done}/{count})"
        print(f"all Ready:                  {verdict}")
        print(f"time to all Ready:          {elapsed:.1f}s ({elapsed / count * 1000:.0f} ms each)")
        print(f"operator peak RSS:          {peak:.0f} MiB (idle after start-up: {idle_peak:.0f} MiB)")
        print(f"reconciles / child writes:  {reconciles:.0f} / {writes:.0f}")
    finally:
        cluster.kubectl(
            "delete", "namespace", namespace, "--wait=true", "--timeout=300s", check=False, timeout=320
        )
        operator.stop()
        registry.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100, help="ModelDeployments to apply at once")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    parser.add_argument("--kubeconfig", type=Path, help="an existing cluster with kwok GPU nodes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.kubeconfig:
            run(Cluster(args.kubeconfig, _kubectl_binary()), args.count, args.timeout, work)
            return
        state_dir = work / "cluster"
        nodes = max(100, args.count // 8 + 1)
        state = devcluster.up(
            state_dir, kwok_nodes=nodes, owner_pid=os.getpid(), report=lambda m: print(m, file=sys.stderr)
        )
        try:
            run(
                Cluster(state.kubeconfig, _kubectl_binary(), state_dir, nodes), args.count, args.timeout, work
            )
        finally:
            devcluster.down(state_dir, report=lambda m: None)


if __name__ == "__main__":
    main()
