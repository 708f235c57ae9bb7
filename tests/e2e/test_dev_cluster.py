"""The dev cluster behaves like Kubernetes: GPU nodes, real Deployments and EndpointSlices, pods that
really serve, scheduling failures, restarts, readiness, graceful termination, kwok fleets."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelplane.testing.cluster import Cluster, wait_for

pytestmark = pytest.mark.e2e

GPU = "nvidia.com/gpu"


def _pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "python:3.11-slim", "command": command}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": spec.pop("labels", {"app": name})},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 5, **spec},
    }


POD_IP_ENV = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]


def _web_deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "web",
                            "image": "python:3.11-slim",
                            "command": ["python", "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
                            "env": POD_IP_ENV,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                        }
                    ],
                },
            },
        },
    }


def _service(name: str, port: int = 8080) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": port}]},
    }


def _pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-n", namespace, "-l", selector)["items"]
    return items


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", [])
    )


def _ready_endpoints(cluster: Cluster, namespace: str, service: str) -> set[str]:
    slices = cluster.get_json(
        "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={service}"
    )
    ips: set[str] = set()
    for item in slices["items"]:
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready"):
                ips.update(endpoint["addresses"])
    return ips


def _pid(pod: dict[str, Any]) -> int:
    container_id = pod["status"]["containerStatuses"][0]["containerID"]
    assert container_id.startswith("modelplane-process://"), container_id
    return int(container_id.rsplit("/", 1)[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _running_pid(cluster: Cluster, namespace: str, name: str) -> int | None:
    pod = cluster.get_json("pod", name, "-n", namespace)
    statuses = pod["status"].get("containerStatuses") or []
    if statuses and "running" in statuses[0]["state"] and statuses[0].get("containerID"):
        return _pid(pod)
    return None


def _local(cluster: Cluster) -> None:
    if not cluster.local:
        pytest.skip("inspects pod processes and files on this machine: needs the dev cluster")


def test_gpu_nodes_ready_and_versions_match(cluster: Cluster) -> None:
    nodes = cluster.get_json("nodes")["items"]
    gpu_nodes = [n for n in nodes if int(n["status"].get("allocatable", {}).get(GPU, "0")) > 0]
    assert gpu_nodes, "no node advertises nvidia.com/gpu"
    for node in gpu_nodes:
        conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert conditions.get("Ready") == "True", node["metadata"]["name"]
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"]
        assert node["metadata"]["labels"]["nvidia.com/gpu.count"] == node["status"]["allocatable"][GPU]
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    client, server = version["clientVersion"], version["serverVersion"]
    assert server["gitVersion"].startswith("v1.")
    assert server["gitVersion"] != "v0.0.0"
    assert client["gitVersion"].startswith("v1.")
    assert abs(int(client["minor"].rstrip("+")) - int(server["minor"].rstrip("+"))) <= 1


def test_deployment_pods_serve_on_their_own_ips_and_stop_on_delete(cluster: Cluster, namespace: str) -> None:
    cluster.apply(_web_deployment("web", 2), namespace)
    cluster.apply(_service("web"), namespace)
    pods = wait_for(
        "2 ready web pods",
        lambda: (lambda ps: ps if len(ps) == 2 and all(_ready(p) for p in ps) else None)(
            _pods(cluster, namespace, "app=web")
        ),
        timeout=90,
    )
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 2
    assert "127.0.0.1" not in ips
    wait_for("both pods in the EndpointSlice", lambda: _ready_endpoints(cluster, namespace, "web") == ips)
    if not cluster.local:
        return
    for ip in ips:
        response = httpx.get(f"http://{ip}:8080/", timeout=5)
        assert response.status_code == 200
    pids = [_pid(p) for p in pods]
    assert all(_alive(pid) for pid in pids)
    cluster.kubectl("delete", "deployment", "web", "-n", namespace, "--wait=true")
    wait_for("web pods deleted", lambda: not _pods(cluster, namespace, "app=web"), timeout=60)
    wait_for("web processes gone", lambda: not any(_alive(pid) for pid in pids), timeout=10)


def test_pod_asking_for_too_many_gpus_stays_pending_with_a_scheduling_event(
    cluster: Cluster, namespace: str
) -> None:
    pod = _pod("greedy", ["python", "-c", "pass"], container={"resources": {"limits": {GPU: "64"}}})
    cluster.apply(pod, namespace)

    def failed_scheduling() -> list[dict[str, Any]]:
        events = cluster.get_json("events", "-n", namespace, "--field-selector", "reason=FailedScheduling")
        return [e for e in events["items"] if e["involvedObject"]["name"] == "greedy"]

    events = wait_for("a FailedScheduling event", failed_scheduling, timeout=60)
    assert GPU in events[0]["message"], events[0]["message"]
    status = cluster.get_json("pod", "greedy", "-n", namespace)["status"]
    assert status["phase"] == "Pending"
    assert not status.get("podIP")


def test_pod_bound_past_the_scheduler_to_a_node_without_enough_gpus_fails_admission(
    cluster: Cluster, namespace: str
) -> None:
    nodes = cluster.get_json("nodes")["items"]
    small = min(
        (
            n
            for n in nodes
            if int(n["status"].get("allocatable", {}).get(GPU, "0")) > 0 and not n["spec"].get("taints")
        ),
        key=lambda n: int(n["status"]["allocatable"][GPU]),
    )
    wanted = int(small["status"]["allocatable"][GPU]) + 1
    pod = _pod(
        "too-big",
        ["python", "-c", "pass"],
        container={"resources": {"limits": {GPU: str(wanted)}}},
        nodeName=small["metadata"]["name"],
    )
    cluster.apply(pod, namespace)

    def failed() -> dict[str, Any] | None:
        status: dict[str, Any] = cluster.get_json("pod", "too-big", "-n", namespace)["status"]
        return status if status.get("phase") == "Failed" else None

    status = wait_for("admission failure", failed, timeout=60)
    assert status["reason"] == f"OutOf{GPU}"
    assert GPU in status["message"]


def test_crashing_container_is_restarted_with_a_rising_restart_count(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(_pod("crasher", ["python", "-c", "import sys; print('crashing'); sys.exit(3)"]), namespace)

    def restarts() -> dict[str, Any] | None:
        statuses = (
            cluster.get_json("pod", "crasher", "-n", namespace)["status"].get("containerStatuses") or []
        )
        return statuses[0] if statuses and statuses[0]["restartCount"] >= 2 else None

    status = wait_for("two restarts", restarts, timeout=90)
    logs = cluster.kubectl("logs", "crasher", "-n", namespace, "-c", "main").stdout.splitlines()
    assert logs.count("crashing") >= 2  # every run's output, as `kubectl logs` shows it
    assert cluster.kubectl("logs", "crasher", "-n", namespace, "--tail=1").stdout == "crashing\n"
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"

    # Between runs the container waits out its back-off, as a kubelet reports it.
    def backing_off() -> bool:
        state = cluster.get_json("pod", "crasher", "-n", namespace)["status"]["containerStatuses"][0]["state"]
        return bool(state.get("waiting", {}).get("reason") == "CrashLoopBackOff")

    wait_for("CrashLoopBackOff", backing_off, timeout=60)


_FLIP_SERVER = """
import http.server, os
state = {"ready": True}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path != "/ready" or state["ready"]
        self.send_response(200 if ok else 503); self.end_headers(); self.wfile.write(b"ok")
    def do_POST(self):
        state["ready"] = False
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"""


def test_failing_readiness_probe_removes_the_pod_from_the_endpointslice(
    cluster: Cluster, namespace: str
) -> None:
    _local(cluster)
    probe = {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1}
    pod = _pod(
        "flip",
        ["python", "-c", _FLIP_SERVER],
        container={"env": POD_IP_ENV, "readinessProbe": probe, "ports": [{"containerPort": 8080}]},
    )
    cluster.apply(pod, namespace)
    cluster.apply(_service("flip"), namespace)
    ip = wait_for(
        "flip ready",
        lambda: (lambda p: p["status"]["podIP"] if _ready(p) else None)(
            cluster.get_json("pod", "flip", "-n", namespace)
        ),
        timeout=60,
    )
    wait_for("flip in the EndpointSlice", lambda: _ready_endpoints(cluster, namespace, "flip") == {ip})
    assert httpx.post(f"http://{ip}:8080/fail", timeout=5).status_code == 200
    wait_for(
        "flip out of the EndpointSlice", lambda: not _ready_endpoints(cluster, namespace, "flip"), timeout=30
    )
    pod_now = cluster.get_json("pod", "flip", "-n", namespace)
    assert not _ready(pod_now)
    assert pod_now["status"]["phase"] == "Running"


_GRACEFUL = """
import os, signal, sys, time
marker = os.environ["MARKER"]
def stop(signum, frame):
    time.sleep(1.5)
    with open(marker, "w") as f:
        f.write("drained after SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
open(marker + ".started", "w").close()
while True:
    time.sleep(0.1)
"""


def test_sigterm_grace_is_honoured_then_sigkill(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    _local(cluster)
    graceful, stubborn = tmp_path / "graceful", tmp_path / "stubborn"
    cluster.apply(
        _pod(
            "graceful",
            ["python", "-c", _GRACEFUL],
            container={"env": [{"name": "MARKER", "value": str(graceful)}]},
            terminationGracePeriodSeconds=10,
        ),
        namespace,
    )
    ignore = (
        "import signal, time, os; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open(os.environ['MARKER'] + '.started', 'w').close(); time.sleep(600)"
    )
    cluster.apply(
        _pod(
            "stubborn",
            ["python", "-c", ignore],
            container={"env": [{"name": "MARKER", "value": str(stubborn)}]},
            terminationGracePeriodSeconds=2,
        ),
        namespace,
    )
    wait_for(
        "both started", lambda: Path(f"{graceful}.started").exists() and Path(f"{stubborn}.started").exists()
    )
    pids = {name: _pid(cluster.get_json("pod", name, "-n", namespace)) for name in ("graceful", "stubborn")}
    cluster.kubectl("delete", "pod", "graceful", "stubborn", "-n", namespace, "--wait=true", timeout=60)
    assert graceful.read_text() == "drained after SIGTERM"
    assert not _alive(pids["graceful"])
    assert not _alive(pids["stubborn"])


_ENV_DUMP = (
    "import json, os; json.dump(dict(os.environ), open(os.environ['OUT'], 'w')); import time; time.sleep(600)"
)


def test_pod_env_has_downward_api_gpus_and_volumes(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    _local(cluster)
    out = tmp_path / "env.json"
    env = [
        {"name": "OUT", "value": str(out)},
        *POD_IP_ENV,
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {
            "name": "MEM_MI",
            "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
        },
        {"name": "GREETING", "value": "hello $(POD_NAME)"},
    ]
    pod = _pod(
        "envy",
        ["python", "-c", _ENV_DUMP],
        container={
            "env": env,
            "resources": {"limits": {GPU: "2", "memory": "512Mi"}},
            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
        },
        volumes=[{"name": "cache", "emptyDir": {}}],
    )
    cluster.apply(pod, namespace)
    wait_for("the env dump", out.exists, timeout=60)
    dumped = wait_for("a complete env dump", lambda: json.loads(out.read_text() or "null"))
    live = cluster.get_json("pod", "envy", "-n", namespace)
    assert dumped["POD_IP"] == live["status"]["podIP"]
    assert dumped["POD_NAME"] == "envy"
    assert dumped["POD_NAMESPACE"] == namespace
    assert dumped["MEM_MI"] == "512"
    assert dumped["GREETING"] == "hello envy"
    assert sorted(int(i) for i in dumped["NVIDIA_VISIBLE_DEVICES"].split(",")) == [0, 1]
    assert live["spec"]["nodeName"].startswith("gpu-a100")
    cache = Path(dumped["MODELPLANE_VOLUME_CACHE"])
    assert cache.is_dir()
    assert not any(cache.iterdir())
    assert json.loads(dumped["MODELPLANE_MOUNTS"])["/cache"] == str(cache)


def test_init_containers_run_in_order_before_the_main_container(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    _local(cluster)
    out = tmp_path / "seen"
    append = "import os, sys; open(os.environ['MODELPLANE_VOLUME_WORK'] + '/log', 'a').write(sys.argv[1])"
    read = (
        "import os, time; d = os.environ['MODELPLANE_VOLUME_WORK']; "
        "open(os.environ['OUT'], 'w').write(open(d + '/log').read()); time.sleep(600)"
    )
    mount = [{"name": "work", "mountPath": "/work"}]
    pod = _pod(
        "ordered",
        ["python", "-c", read],
        container={"env": [{"name": "OUT", "value": str(out)}], "volumeMounts": mount},
        initContainers=[
            {"name": "first", "image": "x", "command": ["python", "-c", append, "a"], "volumeMounts": mount},
            {"name": "second", "image": "x", "command": ["python", "-c", append, "b"], "volumeMounts": mount},
        ],
        volumes=[{"name": "work", "emptyDir": {}}],
    )
    cluster.apply(pod, namespace)
    wait_for("the main container's report", lambda: out.exists() and out.read_text(), timeout=60)
    assert out.read_text() == "ab"
    status = cluster.get_json("pod", "ordered", "-n", namespace)["status"]
    assert [s["state"]["terminated"]["exitCode"] for s in status["initContainerStatuses"]] == [0, 0]


def test_failing_liveness_probe_restarts_the_container(cluster: Cluster, namespace: str) -> None:
    # Nothing listens on the probed port, so every liveness probe fails.
    probe = {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2}
    pod = _pod(
        "unhealthy",
        ["python", "-c", "import time; time.sleep(600)"],
        container={"livenessProbe": probe},
        terminationGracePeriodSeconds=1,
    )
    cluster.apply(pod, namespace)

    def restarted() -> bool:
        statuses = (
            cluster.get_json("pod", "unhealthy", "-n", namespace)["status"].get("containerStatuses") or []
        )
        return bool(statuses) and statuses[0]["restartCount"] >= 1

    wait_for("a liveness restart", restarted, timeout=60)


def test_restarted_agent_leaves_no_orphans_and_reruns_pods(cluster: Cluster, namespace: str) -> None:
    _local(cluster)
    assert cluster.state_dir is not None
    cluster.apply(_pod("sleeper", ["python", "-c", "import time; time.sleep(600)"]), namespace)
    pid = wait_for("sleeper running", lambda: _running_pid(cluster, namespace, "sleeper"))
    from modelplane.devcluster import cluster as devcluster

    devcluster.restart_agent(cluster.state_dir, hard=True)
    wait_for("old process killed", lambda: not _alive(pid), timeout=30)

    def rerun() -> int | None:
        pod = cluster.get_json("pod", "sleeper", "-n", namespace)
        statuses = pod["status"].get("containerStatuses") or []
        if (
            statuses
            and statuses[0].get("containerID")
            and _pid(pod) != pid
            and statuses[0]["restartCount"] >= 1
        ):
            return _pid(pod)
        return None

    new_pid = wait_for("sleeper running again under the new agent", rerun, timeout=60)
    assert _alive(new_pid)


def test_kwok_fleet_schedules_gpu_pods(cluster: Cluster, namespace: str) -> None:
    fleet = len(cluster.get_json("nodes", "-l", "type=kwok")["items"])
    if max(cluster.kwok_nodes, fleet) < 100:
        pytest.skip(
            "needs 100+ kwok nodes (the dev cluster starts them when kwok is built: `make cluster-bins`)"
        )
    ready = wait_for(
        "100 kwok nodes Ready",
        lambda: (lambda ns: ns if len(ns) >= 100 else None)(
            [
                n
                for n in cluster.get_json("nodes", "-l", "type=kwok")["items"]
                if any(
                    c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", [])
                )
            ]
        ),
        timeout=120,
    )
    assert all(int(n["status"]["allocatable"][GPU]) == 8 for n in ready)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "fleet"},
        "spec": {
            "replicas": 120,
            "selector": {"matchLabels": {"app": "fleet"}},
            "template": {
                "metadata": {"labels": {"app": "fleet"}},
                "spec": {
                    "nodeSelector": {"type": "kwok"},
                    "tolerations": [
                        {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "containers": [{"name": "m", "image": "fake", "resources": {"limits": {GPU: "4"}}}],
                },
            },
        },
    }
    cluster.apply(deployment, namespace)

    def running() -> list[dict[str, Any]] | None:
        pods = _pods(cluster, namespace, "app=fleet")
        ok = [p for p in pods if p["status"].get("phase") == "Running"]
        return ok if len(ok) == 120 else None

    pods = wait_for("120 fleet pods Running", running, timeout=180, interval=2)
    per_node: dict[str, int] = {}
    for p in pods:
        per_node[p["spec"]["nodeName"]] = per_node.get(p["spec"]["nodeName"], 0) + 1
    assert all(name.startswith("kwok-") for name in per_node)
    assert max(per_node.values()) <= 2, "a node got more than its 8 GPUs"
    cluster.kubectl("delete", "deployment", "fleet", "-n", namespace, "--wait=false")


def test_helm_installs_and_uninstalls_a_chart(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    version = cluster.helm("version", "--short")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("v3.")
    installed = cluster.helm("install", "demo", str(chart), "-n", namespace, "--set", "greeting=hi", "--wait")
    assert installed.returncode == 0, installed.stderr
    assert cluster.get_json("configmap", "demo-cm", "-n", namespace)["data"] == {"greeting": "hi"}
    removed = cluster.helm("uninstall", "demo", "-n", namespace, "--wait")
    assert removed.returncode == 0, removed.stderr
    gone = cluster.kubectl("get", "configmap", "demo-cm", "-n", namespace, check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr
