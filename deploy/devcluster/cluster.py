"""Start, inspect and stop the dev cluster: etcd, kube-apiserver, controller-manager, scheduler and
the node agent, all on 127.0.0.1 with ports chosen free at start.

Everything a cluster owns lives in its state directory (default ``.modelplane/dev-cluster`` in the
current directory, or ``$MODELPLANE_DEV_CLUSTER_DIR``)::

    cluster.json   ports, pids, node mix; written once everything is up
    kubeconfig     the admin kubeconfig (``modelplane dev-cluster kubeconfig`` prints its path)
    pki/           CA, serving certificate, service-account keys, static admin token
    etcd/          etcd's data
    logs/          one log per component (etcd.log, kube-apiserver.log, ..., node-agent.log)
    agent/         the node agent's pod records (pids, IPs, GPUs), used to leave no orphans
    pods/          per-pod directories: emptyDir volumes and container logs

Each process runs in its own process group; ``down`` stops them by pid (SIGTERM, then SIGKILL),
checking that the pid still runs the binary it started, and removes the state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from modelplane.devcluster import build, certs, nodes, versions
from modelplane.devcluster.agent import ipam
from modelplane.devcluster.kube import Api, ApiError, Credentials

STATE_ENV = "MODELPLANE_DEV_CLUSTER_DIR"
DEFAULT_STATE = Path(".modelplane") / "dev-cluster"
SERVICE_CIDR = "10.0.0.0/24"
# Order matters: started in this order, stopped in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "node-agent", "kwok")


class ClusterError(RuntimeError):
    """The cluster could not start or be reached; the message says what to do."""


Reporter = Callable[[str], None]


def state_dir(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit.resolve()
    env = os.environ.get(STATE_ENV)
    return Path(env).resolve() if env else DEFAULT_STATE.resolve()


@dataclass
class ClusterState:
    """What ``cluster.json`` records about a running cluster."""

    directory: Path
    apiserver_port: int = 0
    etcd_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)
    node_specs: list[nodes.NodeSpec] = field(default_factory=list)
    kwok_nodes: int = 0
    started_at: float = 0.0
    pod_network: str = ""
    owner_pid: int = 0

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    def save(self) -> None:
        data = {
            "apiserver_port": self.apiserver_port,
            "etcd_port": self.etcd_port,
            "pids": self.pids,
            "nodes": [s.to_dict() for s in self.node_specs],
            "kwok_nodes": self.kwok_nodes,
            "started_at": self.started_at,
            "pod_network": self.pod_network,
            "owner_pid": self.owner_pid,
        }
        tmp = self.directory / "cluster.json.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.directory / "cluster.json")

    @classmethod
    def load(cls, directory: Path) -> ClusterState | None:
        path = directory / "cluster.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(
            directory=directory,
            apiserver_port=data["apiserver_port"],
            etcd_port=data["etcd_port"],
            pids={k: int(v) for k, v in data["pids"].items()},
            node_specs=[nodes.NodeSpec.from_dict(d) for d in data["nodes"]],
            kwok_nodes=int(data.get("kwok_nodes", 0)),
            started_at=float(data.get("started_at", 0.0)),
            pod_network=str(data.get("pod_network", "")),
            owner_pid=int(data.get("owner_pid", 0)),
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port_free(port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise ClusterError(
                f"Port {port} on 127.0.0.1 (asked for {what}) is in use. Stop whatever listens there "
                f"(`ss -ltnp 'sport = :{port}'` shows it) or leave the port unset so a free one is chosen."
            ) from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _runs(pid: int, marker: str) -> bool:
    """Whether ``pid`` still runs what we started (guards against pid reuse before signalling)."""
    return pid_alive(pid) and any(marker in part for part in _cmdline(pid))


def stop_process(pid: int, marker: str, grace: float) -> None:
    """SIGTERM the process group of ``pid``, wait up to ``grace`` seconds, then SIGKILL it."""
    if not _runs(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)


def running(state: ClusterState) -> dict[str, bool]:
    markers = _markers()
    return {name: _runs(pid, markers[name]) for name, pid in state.pids.items()}


def _markers() -> dict[str, str]:
    return {
        "etcd": "etcd",
        "kube-apiserver": "kube-apiserver",
        "kube-controller-manager": "kube-controller-manager",
        "kube-scheduler": "kube-scheduler",
        "node-agent": "modelplane.devcluster.agent",
        "kwok": "kwok",
    }


def _spawn(
    name: str,
    argv: list[str],
    state: ClusterState,
    env: dict[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> int:
    state.logs.mkdir(parents=True, exist_ok=True)
    log = (state.logs / f"{name}.log").open("ab")
    try:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=state.directory,
            env=env,
            pass_fds=pass_fds,
        )
    finally:
        log.close()
    state.pids[name] = proc.pid
    # Record as we go, so that `down` can clean up after a start that failed half way.
    state.save()
    return proc.pid


def log_tail(path: Path, lines: int = 30) -> str:
    if not path.is_file():
        return f"(no log at {path})"
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 64 * 1024))
        text = f.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _wait(what: str, check: Callable[[], bool], timeout: float, state: ClusterState, component: str) -> None:
    deadline = time.monotonic() + timeout
    pid = state.pids.get(component)
    while time.monotonic() < deadline:
        if check():
            return
        if pid is not None and not pid_alive(pid):
            log = state.logs / f"{component}.log"
            raise ClusterError(
                f"{component} exited while waiting for {what}. Last lines of {log}:\n" + log_tail(log)
            )
        time.sleep(0.1)
    raise ClusterError(
        f"Timed out after {timeout:.0f}s waiting for {what}. Last lines of {component}'s log:\n"
        + log_tail(state.logs / f"{component}.log")
    )


def _http_ok(url: str, **kwargs: Any) -> bool:
    try:
        return httpx.get(url, timeout=2.0, **kwargs).status_code == 200
    except httpx.HTTPError:
        return False


def _write_component_kubeconfig(state: ClusterState, pki: certs.PKI) -> None:
    text = certs.kubeconfig(state.server, pki.ca_cert, pki.admin_token)
    tmp = state.kubeconfig.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(state.kubeconfig)


def _kwok_config(state: ClusterState) -> Path:
    from modelplane.devcluster import kwok

    path = state.directory / "kwok-stages.yaml"
    path.write_text(kwok.stages_text())
    return path


def up(
    directory: Path,
    mix: str = nodes.DEFAULT_MIX,
    gpu_taint: bool = False,
    apiserver_port: int = 0,
    kwok_nodes: int = 0,
    reset: bool = False,
    report: Reporter = print,
    timeout: float = 120.0,
    owner_pid: int = 0,
) -> ClusterState:
    """Start a dev cluster in ``directory`` and wait until its nodes are Ready.

    With ``owner_pid`` (a test runner), the node agent stops the whole cluster once that process is
    gone, however it ended (even SIGKILL), so a killed run leaves nothing behind.

    Idempotent for a cluster that is already fully running (returns its state). Refuses a stale
    state directory (left by a cluster whose processes are gone) unless ``reset``.
    """
    specs = nodes.parse_mix(mix, gpu_taint=gpu_taint)
    existing = ClusterState.load(directory)
    if existing is not None:
        alive = running(existing)
        if alive and all(alive.values()):
            report(f"dev cluster already running ({existing.server})")
            return existing
        if not reset:
            dead = ", ".join(sorted(n for n, ok in alive.items() if not ok)) or "all components"
            raise ClusterError(
                f"A stale dev cluster state exists in {directory} ({dead} not running). Run "
                "`modelplane dev-cluster down` to stop what is left and remove it, or `up --reset`."
            )
        down(directory, report=report)
    elif directory.exists() and any(directory.iterdir()):
        if not reset:
            raise ClusterError(
                f"{directory} exists and is not empty, but holds no cluster record. Remove it "
                "(`modelplane dev-cluster down`) or pass `--reset`, or choose another --state-dir."
            )
        shutil.rmtree(directory)
    if apiserver_port:
        check_port_free(apiserver_port, "the API server")

    components = list(build.core_components())
    if kwok_nodes:
        components.append(build.kwok_component())
    bins = build.bin_dirs(components)

    directory.mkdir(parents=True, exist_ok=True)
    state = ClusterState(
        directory=directory,
        node_specs=specs,
        kwok_nodes=kwok_nodes,
        started_at=time.time(),
        owner_pid=owner_pid,
    )
    state.apiserver_port = apiserver_port or free_port()
    state.etcd_port = free_port()
    peer_port = free_port()
    state.save()
    try:
        _start(state, bins, peer_port, report, timeout)
    except BaseException:
        report("start failed; stopping what was started")
        down(directory, keep=True, report=lambda _m: None)
        raise
    return state


def _start(
    state: ClusterState, bins: dict[str, Path], peer_port: int, report: Reporter, timeout: float
) -> None:
    start = time.monotonic()
    pki = certs.generate(state.directory / "pki")
    _write_component_kubeconfig(state, pki)
    etcd_url = f"http://127.0.0.1:{state.etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    report("starting etcd")
    _spawn(
        "etcd",
        [
            str(bins["etcd"]),
            "--name=default",
            f"--data-dir={state.directory / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--listen-metrics-urls=",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
        state,
    )
    _wait("etcd /health", lambda: _http_ok(f"{etcd_url}/health"), timeout, state, "etcd")

    report("starting kube-apiserver")
    _spawn(
        "kube-apiserver",
        [
            str(bins["kube-apiserver"]),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={state.apiserver_port}",
            f"--cert-dir={state.directory / 'pki' / 'generated'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--token-auth-file={pki.token_file}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            # Every dev node's kubelet (the agent, for `kubectl logs`) is at InternalIP 127.0.0.1.
            "--kubelet-preferred-address-types=InternalIP",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--v=1",
        ],
        state,
    )
    ca = ssl.create_default_context(cafile=str(pki.ca_cert))
    _wait(
        "kube-apiserver /readyz",
        lambda: _http_ok(
            f"{state.server}/readyz", verify=ca, headers={"Authorization": f"Bearer {pki.admin_token}"}
        ),
        timeout,
        state,
        "kube-apiserver",
    )
    report(f"kube-apiserver ready at {state.server} ({time.monotonic() - start:.1f}s)")

    kubeconfig = str(state.kubeconfig)
    _spawn(
        "kube-controller-manager",
        [
            str(bins["kube-controller-manager"]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
            "--concurrent-deployment-syncs=10",
            "--v=1",
        ],
        state,
    )
    _spawn(
        "kube-scheduler",
        [
            str(bins["kube-scheduler"]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--v=1",
        ],
        state,
    )
    report("starting node agent")
    _spawn_agent(state)
    if state.kwok_nodes:
        report(f"starting kwok with {state.kwok_nodes} fake GPU nodes")
        from modelplane.devcluster import kwok

        _spawn("kwok", kwok.command(bins["kwok"], kubeconfig, _kwok_config(state)), state)
    api = Api(Credentials.from_kubeconfig(state.kubeconfig))
    try:
        if state.kwok_nodes:
            from modelplane.devcluster import kwok

            kwok.create_nodes(api, state.kwok_nodes)
        names = {s.name for s in state.node_specs}
        if state.kwok_nodes:
            names |= {kwok.node_name(i) for i in range(state.kwok_nodes)}
        _wait(f"{len(names)} nodes Ready", lambda: names <= ready_nodes(api), timeout, state, "node-agent")
    finally:
        api.close()
    state.save()
    total = len(state.node_specs) + state.kwok_nodes
    report(f"dev cluster up: {total} nodes Ready in {time.monotonic() - start:.1f}s")


def _spawn_agent(state: ClusterState) -> int:
    """Start the node agent holding the claim on this cluster's pod network (see ``ipam.claim``)."""
    network, fd = ipam.claim(state.pod_network or None)
    try:
        state.pod_network = network
        argv = [
            sys.executable,
            "-m",
            "modelplane.devcluster.agent",
            f"--state-dir={state.directory}",
            f"--pod-network={network}",
            f"--kubelet-version={versions.KUBERNETES}",
        ]
        if state.owner_pid:
            argv.append(f"--owner-pid={state.owner_pid}")
        return _spawn("node-agent", argv, state, env={**os.environ, "PYTHONUNBUFFERED": "1"}, pass_fds=(fd,))
    finally:
        os.close(fd)


def restart_agent(directory: Path, hard: bool = False) -> int:
    """Replace the node agent: SIGKILL it (``hard``: its pods' processes are orphaned, as after a
    crash) or stop it, then start a new one, which must clean up after the old. Returns the new pid."""
    state = ClusterState.load(directory)
    if state is None:
        raise ClusterError(f"no dev cluster in {directory}")
    pid = state.pids["node-agent"]
    if hard:
        if _runs(pid, _markers()["node-agent"]):
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and pid_alive(pid):
                time.sleep(0.05)
    else:
        stop_process(pid, _markers()["node-agent"], grace=20.0)
    return _spawn_agent(state)


def ready_nodes(api: Api) -> set[str]:
    try:
        items = api.get("/api/v1/nodes")["items"]
    except (ApiError, httpx.HTTPError):
        return set()
    ready: set[str] = set()
    for node in items:
        for cond in node.get("status", {}).get("conditions", []):
            if cond["type"] == "Ready" and cond["status"] == "True":
                ready.add(node["metadata"]["name"])
    return ready


def stop_others(directory: Path, myself: str) -> None:
    """Stop every component but ``myself`` (the node agent, when its owner vanished)."""
    state = ClusterState.load(directory)
    if state is None:
        return
    markers = _markers()
    for name in reversed(COMPONENTS):
        pid = state.pids.get(name)
        if pid is not None and name != myself:
            stop_process(pid, markers[name], grace=10.0)


def down(directory: Path, keep: bool = False, report: Reporter = print) -> bool:
    """Stop every process the cluster started (by pid), kill leftover pod processes, remove the state.

    Returns whether there was anything to stop. ``keep`` leaves the state directory (logs) in place.
    """
    state = ClusterState.load(directory)
    found = state is not None
    if state is not None:
        markers = _markers()
        for name in reversed(COMPONENTS):
            pid = state.pids.get(name)
            if pid is None:
                continue
            # The agent stops its pods first (SIGTERM, a short grace, SIGKILL).
            stop_process(pid, markers[name], grace=20.0 if name == "node-agent" else 10.0)
            report(f"stopped {name} (pid {pid})")
    from modelplane.devcluster.agent import records

    leftovers = records.kill_recorded(directory / "agent")
    if leftovers:
        report(f"killed {leftovers} leftover pod process group(s)")
    if not keep and directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
    return found or leftovers > 0


def status(directory: Path) -> dict[str, Any]:
    """A summary: per-component liveness, the server, node readiness (when reachable)."""
    state = ClusterState.load(directory)
    if state is None:
        return {"running": False, "state_dir": str(directory)}
    alive = running(state)
    summary: dict[str, Any] = {
        "running": bool(alive) and all(alive.values()),
        "state_dir": str(directory),
        "server": state.server,
        "kubeconfig": str(state.kubeconfig),
        "components": {name: {"pid": state.pids[name], "running": ok} for name, ok in alive.items()},
        "nodes": {},
    }
    if alive.get("kube-apiserver"):
        api = Api(Credentials.from_kubeconfig(state.kubeconfig), timeout=3.0)
        try:
            ready = ready_nodes(api)
        finally:
            api.close()
        summary["nodes"] = {s.name: s.name in ready for s in state.node_specs}
        summary["kwok_nodes_ready"] = len([n for n in ready if n.startswith("kwok-")])
    return summary


def add_nodes(directory: Path, mix: str, timeout: float = 60.0) -> list[str]:
    """Add nodes (a mix such as ``h100:4``) to a running cluster; returns their names once Ready.

    The node agent re-reads ``cluster.json`` and registers them: a cluster grows while it runs,
    as when a cloud autoscaler adds a GPU node.
    """
    state = ClusterState.load(directory)
    if state is None:
        raise ClusterError(f"no dev cluster in {directory}: start one with `modelplane dev-cluster up`")
    taken = {s.name for s in state.node_specs}
    added: list[nodes.NodeSpec] = []
    for spec in nodes.parse_mix(mix):
        name, n = spec.name, 0
        while name in taken:
            n += 1
            name = f"{spec.name}-{n}"
        taken.add(name)
        added.append(
            nodes.NodeSpec(name=name, gpus=spec.gpus, product=spec.product, gpu_taint=spec.gpu_taint)
        )
    state.node_specs.extend(added)
    state.save()
    names = {s.name for s in added}
    api = Api(Credentials.from_kubeconfig(state.kubeconfig))
    try:
        _wait(
            f"nodes {', '.join(sorted(names))} Ready",
            lambda: names <= ready_nodes(api),
            timeout,
            state,
            "agent",
        )
    finally:
        api.close()
    return sorted(names)


def remove_nodes(directory: Path, names: list[str]) -> None:
    """Remove nodes added by :func:`add_nodes` (or any of the cluster's): unregister and delete them."""
    state = ClusterState.load(directory)
    if state is None:
        raise ClusterError(f"no dev cluster in {directory}")
    state.node_specs = [s for s in state.node_specs if s.name not in set(names)]
    state.save()
    api = Api(Credentials.from_kubeconfig(state.kubeconfig))
    try:
        for name in names:
            with contextlib.suppress(ApiError):
                api.delete(f"/api/v1/nodes/{name}")
    finally:
        api.close()
