"""The node agent process: registers the nodes, heartbeats, and runs a worker per bound pod.

Level-triggered: every ``SYNC`` seconds it lists the pods, starts a worker for each new pod bound to
one of its nodes, hands every worker the latest object, and tells workers whose pod vanished to
stop. On start it first kills the process groups recorded by a previous agent (see ``records``),
so a killed and restarted agent leaves no orphans; the pods are then run afresh.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from modelplane.devcluster import cluster, nodes
from modelplane.devcluster.agent import gpus, ipam, logs, records
from modelplane.devcluster.agent.pods import PodWorker, now_rfc3339
from modelplane.devcluster.kube import ApiError, AsyncApi, Credentials

log = logging.getLogger("modelplane.devcluster.agent")
SYNC = 0.3
HEARTBEAT = 10.0
LEASE_SECONDS = 40


class Agent:
    def __init__(
        self,
        state_dir: Path,
        specs: list[nodes.NodeSpec],
        pod_network: str,
        kubelet_version: str,
        api: AsyncApi,
    ) -> None:
        self.state_dir = state_dir
        self.agent_dir = state_dir / "agent"
        self.specs = {s.name: s for s in specs}
        self.pod_network = ipam.check_network(pod_network)
        self.kubelet_version = kubelet_version
        self.api = api
        self.apiserver_port = int(api.creds.server.rsplit(":", 1)[1])
        self.workers: dict[str, PodWorker] = {}
        self.kubelet_port = 0
        self.rejected: set[str] = set()
        self.ready_since = now_rfc3339()
        bin_dir = str(Path(sys.executable).parent)
        self.base_env = {
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONUNBUFFERED": "1",
        }
        if "VIRTUAL_ENV" in os.environ:
            self.base_env["VIRTUAL_ENV"] = os.environ["VIRTUAL_ENV"]

    def pod_alive(self, namespace: str, name: str) -> bool:
        return any(
            w.namespace == namespace and w.name == name and not w.finished for w in self.workers.values()
        )

    def node_spec(self, name: str) -> nodes.NodeSpec:
        return self.specs[name]

    # ---- nodes -------------------------------------------------------------------------------
    async def register_nodes(self) -> None:
        for spec in self.specs.values():
            body = nodes.node_object(spec)
            try:
                await self.api.post("/api/v1/nodes", body)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                await self.api.patch(
                    f"/api/v1/nodes/{spec.name}", {"metadata": body["metadata"], "spec": body["spec"]}
                )
        await self.heartbeat()

    async def heartbeat(self) -> None:
        now = now_rfc3339()
        micro = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for spec in self.specs.values():
            status = nodes.node_status(
                spec, now, self.ready_since, self.kubelet_version, kubelet_port=self.kubelet_port
            )
            try:
                await self.api.patch(f"/api/v1/nodes/{spec.name}/status", {"status": status})
                await self._renew_lease(spec.name, micro)
            except Exception as exc:
                log.warning("heartbeat for node %s failed: %s", spec.name, exc)

    async def _renew_lease(self, node: str, micro: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
        spec = {"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": micro}
        try:
            await self.api.patch(path, {"spec": spec})
        except ApiError as exc:
            if exc.status != 404:
                raise
            await self.api.post(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": node},
                    "spec": spec,
                },
            )

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            await self.heartbeat()

    async def reload_nodes(self) -> None:
        """Pick up nodes added to or removed from ``cluster.json`` while the cluster runs."""
        specs = {s.name: s for s in _load_specs(self.state_dir)}
        if specs.keys() == self.specs.keys():
            return
        added = [name for name in specs if name not in self.specs]
        removed = [name for name in self.specs if name not in specs]
        self.specs = specs
        if added:
            await self.register_nodes()
        log.info("nodes now: %s (added %s, removed %s)", ", ".join(self.specs), added or "-", removed or "-")

    async def reload_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.reload_nodes()
            except Exception as exc:
                log.warning("reloading the node list failed: %s", exc)

    # ---- pods --------------------------------------------------------------------------------
    def _used_ips(self) -> set[str]:
        return {w.pod_ip for w in self.workers.values()}

    def _gpus_in_use(self, node: str) -> set[int]:
        used: set[int] = set()
        for w in self.workers.values():
            if w.pod["spec"].get("nodeName") == node:
                for indices in w.gpu_indices.values():
                    used.update(indices)
        return used

    def _admit(self, pod: dict[str, Any]) -> PodWorker | None:
        node = pod["spec"]["nodeName"]
        spec = self.specs[node]
        used = self._gpus_in_use(node)
        assigned: dict[str, list[int]] = {}
        for container in pod["spec"]["containers"]:
            count = gpus.requested(container)
            indices = gpus.assign(spec.gpus, used, count)
            if indices is None:
                log.warning("pod %s: node %s has too few free GPUs", pod["metadata"]["name"], node)
                return None
            used.update(indices)
            if indices:
                assigned[container["name"]] = indices
        ip = (pod.get("status") or {}).get("podIP") or ""
        if not ip or ip in self._used_ips() or not ipam.contains(self.pod_network, ip):
            ip = ipam.allocate(str(self.pod_network), self._used_ips())
        return PodWorker(self, pod, ip, assigned)

    def _gpu_shortage(self, pod: dict[str, Any]) -> str:
        node = pod["spec"]["nodeName"]
        wanted = sum(gpus.requested(c) for c in pod["spec"]["containers"])
        used = len(self._gpus_in_use(node))
        return (
            f"Node didn't have enough resource: {gpus.GPU_RESOURCE}, requested: {wanted}, used: {used}, "
            f"capacity: {self.specs[node].gpus}"
        )

    async def _reject(self, pod: dict[str, Any], reason: str, message: str) -> None:
        """Fail a pod the node cannot run, as a kubelet's admission does (once per pod)."""
        uid = pod["metadata"]["uid"]
        if uid in self.rejected:
            return
        status = {"phase": "Failed", "reason": reason, "message": message}
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            await self.api.patch(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status", {"status": status}
            )
            self.rejected.add(uid)

    async def sync(self) -> None:
        pods = (await self.api.get("/api/v1/pods"))["items"]
        seen: set[str] = set()
        for pod in pods:
            if pod["spec"].get("nodeName") not in self.specs:
                continue
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            worker = self.workers.get(uid)
            if worker is None:
                phase = (pod.get("status") or {}).get("phase")
                if phase in ("Succeeded", "Failed"):
                    if pod["metadata"].get("deletionTimestamp"):
                        with contextlib.suppress(ApiError):
                            await self.api.delete(
                                f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}",
                                {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                            )
                    continue
                worker = self._admit(pod)
                if worker is None:
                    await self._reject(pod, f"OutOf{gpus.GPU_RESOURCE}", self._gpu_shortage(pod))
                    continue
                self.workers[uid] = worker
                worker.task = asyncio.create_task(worker.run(), name=f"pod {uid}")
            else:
                worker.update(pod)
        for uid, worker in list(self.workers.items()):
            if uid not in seen:
                worker.gone = True
            if worker.finished:
                del self.workers[uid]

    async def sync_loop(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as exc:
                log.warning("pod sync failed: %s", exc)
            await asyncio.sleep(SYNC)

    async def shutdown(self) -> None:
        """Stop every pod's processes (short grace); the pod objects stay for a later agent."""
        tasks = [w.task for w in self.workers.values() if w.task is not None]
        await asyncio.gather(*(w.stop(3.0) for w in self.workers.values()), return_exceptions=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _watch_owner(pid: int, stop: asyncio.Event) -> None:
    # Polling: another session's process gives no event to wait on.
    while cluster.pid_alive(pid):  # noqa: ASYNC110
        await asyncio.sleep(1.0)
    log.info("owner process %d exited", pid)
    stop.set()


def _load_specs(state_dir: Path) -> list[nodes.NodeSpec]:
    data = json.loads((state_dir / "cluster.json").read_text())
    return [nodes.NodeSpec.from_dict(d) for d in data["nodes"]]


async def run(args: argparse.Namespace) -> None:
    state_dir: Path = args.state_dir
    specs = _load_specs(state_dir)
    killed = records.kill_recorded(state_dir / "agent")
    if killed:
        log.info("killed %d pod process group(s) left by a previous agent", killed)
    api = AsyncApi(Credentials.from_kubeconfig(state_dir / "kubeconfig"))
    agent = Agent(state_dir, specs, args.pod_network, args.kubelet_version, api)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner, agent.kubelet_port = await logs.serve(
        logs.make_app(state_dir / "pods", agent.pod_alive),
        state_dir / "pki" / "apiserver.crt",
        state_dir / "pki" / "apiserver.key",
    )
    await agent.register_nodes()
    log.info("registered nodes: %s", ", ".join(agent.specs))
    tasks = [
        asyncio.create_task(agent.heartbeat_loop()),
        asyncio.create_task(agent.sync_loop()),
        asyncio.create_task(agent.reload_loop()),
    ]
    if args.owner_pid:
        tasks.append(asyncio.create_task(_watch_owner(args.owner_pid, stop)))
    await stop.wait()
    log.info("stopping: terminating pod processes")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await agent.shutdown()
    await runner.cleanup()
    await api.close()
    if args.owner_pid and not cluster.pid_alive(args.owner_pid):
        log.info("owner %d is gone: stopping the rest of the cluster", args.owner_pid)
        await asyncio.to_thread(cluster.stop_others, state_dir, "node-agent")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modelplane.devcluster.agent", description=__doc__)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--pod-network", default="127.10.0.0/16")
    parser.add_argument("--kubelet-version", default="v0.0.0")
    parser.add_argument(
        "--owner-pid", type=int, default=0, help="stop the whole cluster when this process is gone"
    )
    args = parser.parse_args(argv)
    args.state_dir = Path(args.state_dir).resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(run(args))
