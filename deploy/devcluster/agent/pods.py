"""One pod on a dev-cluster node: its processes, probes, restarts, status and termination.

What a pod's process gets (the contract product code may rely on, the same as on a kubelet where
Kubernetes defines it):

- its own loopback IP (``status.podIP``, e.g. ``127.10.0.2``), to bind its servers to; the
  downward API (``fieldRef: status.podIP``) hands it over, as on a real cluster;
- the env the kubelet builds (literal values with ``$(VAR)`` expansion, ``fieldRef``,
  ``resourceFieldRef``, ConfigMap/Secret keys, ``envFrom``), plus ``HOSTNAME`` and
  ``KUBERNETES_SERVICE_HOST``/``_PORT`` pointing at the API server;
- the project's Python environment: the venv's ``bin`` comes first on ``PATH``, so a container
  command of ``python`` or ``modelplane`` runs the installed package (images are not pulled);
- volumes as per-pod directories. A process cannot see them at their ``mountPath`` (there is no
  mount namespace), so it finds them through env: ``MODELPLANE_VOLUME_<NAME>`` (volume name upper
  cased, non-alphanumerics as ``_``) is the directory of each volume, and ``MODELPLANE_MOUNTS`` is
  a JSON object mapping each of the container's ``mountPath`` to its directory. Arguments and env
  values that name a ``mountPath`` (or a path under it) are rewritten to the volume's directory, so
  ``--model-repository /models`` reaches the volume without the program knowing. ``emptyDir``
  starts empty; ``configMap`` and ``secret`` volumes hold one file per key;
- its ServiceAccount's credentials: the projected token volume is filled through the TokenRequest
  API, and ``$KUBECONFIG`` names a kubeconfig with that token (see ``serviceaccount``);
- ``NVIDIA_VISIBLE_DEVICES`` with the GPU indices assigned to it (containers asking for
  ``nvidia.com/gpu``), as the NVIDIA device plugin would assign them;
- stdout and stderr appended to ``<state>/pods/<namespace>_<name>_<uid8>/logs/<container>.log``
  (served to ``kubectl logs`` by ``logs``).

On deletion every container gets SIGTERM (to its whole process group), then SIGKILL after the
pod's grace period; then the pod object is removed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import logging
import os
import re
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelplane.devcluster.agent import backoff, downward, gpus, probes, records, serviceaccount
from modelplane.devcluster.kube import ApiError

if TYPE_CHECKING:
    from modelplane.devcluster.agent.main import Agent

log = logging.getLogger("modelplane.devcluster.agent")
TICK = 0.1


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def env_name(volume: str) -> str:
    return "MODELPLANE_VOLUME_" + re.sub(r"[^A-Za-z0-9]", "_", volume).upper()


#: The kubelet keeps at most this much of a failed container's log as its termination message.
TERMINATION_LOG_LINES = 80
TERMINATION_LOG_BYTES = 2048


def log_tail(path: Path) -> str:
    """The end of a container's log, as ``terminationMessagePolicy: FallbackToLogsOnError`` keeps it."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - TERMINATION_LOG_BYTES))
            data = log.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines()[-TERMINATION_LOG_LINES:]
    return "\n".join(lines)


def pull_refusal(spec: Mapping[str, Any]) -> str | None:
    """Why the image cannot be "pulled": the agent runs commands and pulls nothing, but an image
    from a registry under the reserved top-level domain ``.invalid`` (RFC 2606) could never be
    pulled by a kubelet either, so it fails the same way (how tests produce ImagePullBackOff)."""
    image = str(spec.get("image") or "")
    host = image.split("/", 1)[0] if "/" in image else ""
    if host.split(":", 1)[0].endswith(".invalid"):
        return f'Back-off pulling image "{image}": registry {host} cannot be resolved'
    return None


@dataclass
class Container:
    """Runtime state of one container (regular or init)."""

    spec: dict[str, Any]
    init: bool
    restart_count: int = 0
    proc: asyncio.subprocess.Process | None = None
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    started_mono: float = 0.0
    streak: int = 0
    restart_at: float | None = 0.0
    kill_at: float | None = None
    kill_reason: str = ""
    readiness: probes.ProbeTracker | None = None
    liveness: probes.ProbeTracker | None = None
    startup: probes.ProbeTracker | None = None
    done: bool = False
    env: dict[str, str] = field(default_factory=dict)
    pull_failures: int = 0

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def started(self) -> bool:
        return self.running and (self.startup is None or self.startup.ever_succeeded)

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        return self.readiness.result if self.readiness is not None else True


class PodWorker:
    """Drives one pod from admission to deletion; the agent feeds it the latest pod object."""

    def __init__(
        self, agent: Agent, pod: dict[str, Any], pod_ip: str, gpu_indices: dict[str, list[int]]
    ) -> None:
        self.agent = agent
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.namespace: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]
        self.pod_ip = pod_ip
        self.gpu_indices = gpu_indices
        self.gone = False
        self.directory = agent.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        spec = pod["spec"]
        previous = {
            s["name"]: int(s.get("restartCount", 0))
            for s in (pod.get("status") or {}).get("containerStatuses") or []
        }
        # A pod restarted by a new agent continues its restart count (its processes were killed).
        self.containers = [
            Container(c, init=False, restart_count=previous.get(c["name"], 0)) for c in spec["containers"]
        ]
        for c in self.containers:
            if c.name in previous:
                c.restart_count += 1
        self.init_containers = [Container(c, init=True) for c in spec.get("initContainers") or []]
        self.initialized = not self.init_containers
        self.start_time = (pod.get("status") or {}).get("startTime") or now_rfc3339()
        self.transitions: dict[str, tuple[str, str]] = {}
        self.last_status: dict[str, Any] | None = None
        self.finished = False
        self.config_error = ""
        self.policy: str = spec.get("restartPolicy") or "Always"
        self.task: asyncio.Task[None] | None = None
        self.kubeconfig: Path | None = None

    # ---- inputs from the agent -------------------------------------------------------------
    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod

    @property
    def deleting(self) -> bool:
        return self.gone or bool(self.pod["metadata"].get("deletionTimestamp"))

    # ---- main loop -------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._prepare()
            while not self.deleting:
                await self._step()
                await self._push_status()
                await asyncio.sleep(TICK)
            grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
            if grace is None:
                grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
            await self.stop(float(grace))
            if not self.gone:
                await self._push_status()
                await self._finalize_deletion()
        except asyncio.CancelledError:
            await self.stop(0.0)
            raise
        except Exception:
            log.exception("pod %s/%s: worker failed; stopping its processes", self.namespace, self.name)
            await self.stop(2.0)
        finally:
            records.remove(self.agent.agent_dir, self.uid)
            self.finished = True

    async def _prepare(self) -> None:
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        for volume in self.pod["spec"].get("volumes") or []:
            path = self.directory / "volumes" / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            await self._fill_volume(volume, path)

    async def _fill_volume(self, volume: dict[str, Any], path: Path) -> None:
        config = await serviceaccount.fill(self.agent.api, self.pod, volume, path)
        if config is not None:
            self.kubeconfig = config
        for kind, plural in (("configMap", "configmaps"), ("secret", "secrets")):
            if kind not in volume:
                continue
            ref = volume[kind]
            name = ref.get("name") or ref.get("secretName", "")
            try:
                obj = await self.agent.api.get(f"/api/v1/namespaces/{self.namespace}/{plural}/{name}")
            except ApiError:
                continue
            for key, value in (obj.get("data") or {}).items():
                data = base64.b64decode(value) if kind == "secret" else str(value).encode()
                (path / key).write_bytes(data)

    def _mounts(self, container: dict[str, Any]) -> dict[str, str]:
        mounts: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            base = self.directory / "volumes" / mount["name"]
            sub = mount.get("subPath") or ""
            target = base / sub if sub else base
            target.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = str(target)
        return mounts

    async def _build_env(self, c: Container) -> dict[str, str]:
        wanted_cms, wanted_secrets = downward.referenced_objects(self.pod)
        config_maps: dict[str, dict[str, str]] = {}
        secrets: dict[str, dict[str, str]] = {}
        for names, plural, into in (
            (wanted_cms, "configmaps", config_maps),
            (wanted_secrets, "secrets", secrets),
        ):
            for name in names:
                try:
                    obj = await self.agent.api.get(f"/api/v1/namespaces/{self.namespace}/{plural}/{name}")
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    continue
                into[name] = dict(obj.get("data") or {})
        node = self.agent.node_spec(self.pod["spec"]["nodeName"])
        from modelplane.devcluster import nodes

        allocatable = nodes.capacity(node)
        env = dict(self.agent.base_env)
        env.update(
            {
                "HOSTNAME": self.name,
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": str(self.agent.apiserver_port),
                records.UID_ENV: self.uid,
                "MODELPLANE_POD_IP": self.pod_ip,
                "MODELPLANE_POD_DIR": str(self.directory),
                "MODELPLANE_MOUNTS": json.dumps(self._mounts(c.spec)),
            }
        )
        for volume in self.pod["spec"].get("volumes") or []:
            env[env_name(volume["name"])] = str(self.directory / "volumes" / volume["name"])
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        indices = self.gpu_indices.get(c.name)
        if indices:
            env["NVIDIA_VISIBLE_DEVICES"] = gpus.visible_devices(indices)
        mounts = self._mounts(c.spec)
        declared = downward.build_env(
            c.spec, self.pod, self.pod_ip, "127.0.0.1", config_maps, secrets, allocatable
        )
        env.update({name: downward.remap_mount_paths(value, mounts) for name, value in declared.items()})
        return env

    def _argv(self, c: Container) -> list[str]:
        mounts = self._mounts(c.spec)
        argv = [
            downward.remap_mount_paths(downward.expand(str(a), c.env), mounts)
            for a in [*(c.spec.get("command") or []), *(c.spec.get("args") or [])]
        ]
        if not argv:
            raise downward.EnvError(
                "the dev cluster runs a container's `command` (images are not pulled); this one has none"
            )
        return argv

    async def _start(self, c: Container) -> None:
        if (refusal := pull_refusal(c.spec)) is not None:
            # As the kubelet does: the first failure is ErrImagePull, later ones back off.
            reason = "ImagePullBackOff" if c.pull_failures else "ErrImagePull"
            c.pull_failures += 1
            c.state = {"waiting": {"reason": reason, "message": refusal}}
            c.restart_at = time.monotonic() + backoff.Backoff().delay(min(c.pull_failures, 5))
            return
        try:
            c.env = await self._build_env(c)
            argv = self._argv(c)
        except (downward.EnvError, ApiError) as exc:
            self.config_error = str(exc)
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            c.restart_at = time.monotonic() + 2.0
            return
        self.config_error = ""
        workdir = str(c.spec.get("workingDir") or "")
        has_workdir = bool(workdir) and os.path.isdir(workdir)  # noqa: ASYNC240 - one stat before a fork
        cwd = workdir if has_workdir else str(self.directory)
        logfile = (self.directory / "logs" / f"{c.name}.log").open("ab")
        try:
            c.proc = await asyncio.create_subprocess_exec(
                *argv,
                env=c.env,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            c.proc = None
            message = f"cannot start {argv[0]!r}: {exc}"
            logfile.write(f"[node agent] {message}\n".encode())
            c.state = {"waiting": {"reason": "RunContainerError", "message": message}}
            c.last_state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": message,
                    "finishedAt": now_rfc3339(),
                }
            }
            c.restart_at = time.monotonic() + backoff.Backoff().delay(c.streak)
            c.streak += 1
            return
        finally:
            logfile.close()
        started = now_rfc3339()
        c.state = {"running": {"startedAt": started}}
        c.started_mono = time.monotonic()
        c.restart_at = None
        c.kill_at = None
        c.kill_reason = ""
        self._record()
        now = time.monotonic()
        spec = c.spec
        c.startup = (
            probes.ProbeTracker(spec["startupProbe"], initial=False) if spec.get("startupProbe") else None
        )
        c.readiness = (
            probes.ProbeTracker(spec["readinessProbe"], initial=False) if spec.get("readinessProbe") else None
        )
        c.liveness = (
            probes.ProbeTracker(spec["livenessProbe"], initial=True) if spec.get("livenessProbe") else None
        )
        for tracker in (c.startup, c.readiness, c.liveness):
            if tracker is not None:
                tracker.start(now)
        log.info("pod %s/%s: started %s (pid %d): %s", self.namespace, self.name, c.name, c.proc.pid, argv)

    def _record(self) -> None:
        pgids = [c.proc.pid for c in (*self.init_containers, *self.containers) if c.proc and c.running]
        records.write(
            self.agent.agent_dir,
            self.uid,
            {"pgids": pgids, "ip": self.pod_ip, "pod": f"{self.namespace}/{self.name}"},
        )

    def _on_exit(self, c: Container) -> None:
        assert c.proc is not None
        code = c.proc.returncode
        assert code is not None
        exit_code = code if code >= 0 else 128 + (-code)
        reason = c.kill_reason or ("Completed" if exit_code == 0 else "Error")
        started = c.state.get("running", {}).get("startedAt", now_rfc3339())
        terminated = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": now_rfc3339(),
        }
        if exit_code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            terminated["message"] = log_tail(self.directory / "logs" / f"{c.name}.log")
        ran_for = time.monotonic() - c.started_mono
        c.proc = None
        c.kill_at = None
        self._record()
        restart = backoff.should_restart(
            "OnFailure" if c.init and self.policy == "Always" else self.policy, exit_code
        )
        if c.init and exit_code == 0:
            c.state = {"terminated": terminated}
            c.done = True
            return
        if not restart:
            c.state = {"terminated": terminated}
            c.done = True
            return
        policy = backoff.Backoff()
        c.streak = policy.next_streak(c.streak, ran_for)
        delay = policy.delay(max(0, c.streak - 1))
        c.last_state = {"terminated": terminated}
        c.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:.0f}s restarting failed container",
            }
        }
        c.restart_at = time.monotonic() + delay
        log.info(
            "pod %s/%s: %s exited %d; restart in %.1fs", self.namespace, self.name, c.name, exit_code, delay
        )

    def _kill(self, c: Container, reason: str, grace: float) -> None:
        if not c.running or c.kill_at is not None:
            return
        assert c.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(c.proc.pid, signal.SIGTERM)
        c.kill_at = time.monotonic() + grace
        c.kill_reason = reason

    async def _step(self) -> None:
        now = time.monotonic()
        if not self.initialized:
            for c in self.init_containers:
                if c.done:
                    continue
                if c.running:
                    break
                if c.proc is not None:
                    self._on_exit(c)
                    break
                if c.restart_at is not None and now >= c.restart_at:
                    if c.state.get("waiting", {}).get("reason") == "CrashLoopBackOff":
                        c.restart_count += 1
                    await self._start(c)
                break
            if any(c.done and c.state["terminated"]["exitCode"] != 0 for c in self.init_containers):
                return  # failed for good (restartPolicy Never)
            self.initialized = all(c.done for c in self.init_containers)
            if not self.initialized:
                return
        due: list[tuple[Container, probes.ProbeTracker, str]] = []
        for c in self.containers:
            if c.proc is not None and c.proc.returncode is not None:
                self._on_exit(c)
            if c.running:
                assert c.proc is not None
                if c.kill_at is not None and now >= c.kill_at:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(c.proc.pid, signal.SIGKILL)
                    continue
                if c.startup is not None and not c.startup.ever_succeeded:
                    if c.startup.due(now):
                        due.append((c, c.startup, "startup"))
                    continue
                for tracker, kind in ((c.readiness, "readiness"), (c.liveness, "liveness")):
                    if tracker is not None and tracker.due(now):
                        due.append((c, tracker, kind))
            elif not c.done and c.restart_at is not None and now >= c.restart_at:
                if c.state.get("waiting", {}).get("reason") == "CrashLoopBackOff":
                    c.restart_count += 1
                await self._start(c)
        if due:
            results = await asyncio.gather(
                *(
                    probes.run_probe(t.spec, c.spec, self.pod_ip, c.env, str(self.directory))
                    for c, t, _ in due
                )
            )
            now = time.monotonic()
            grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
            for (c, tracker, kind), ok in zip(due, results, strict=True):
                tracker.record(ok, now)
                if kind == "liveness" and not tracker.result:
                    log.info(
                        "pod %s/%s: %s failed its liveness probe; restarting",
                        self.namespace,
                        self.name,
                        c.name,
                    )
                    self._kill(c, "Error", grace)
                elif (
                    kind == "startup"
                    and not tracker.result
                    and tracker.failures >= int(tracker.spec.get("failureThreshold") or 3)
                ):
                    log.info(
                        "pod %s/%s: %s failed its startup probe; restarting",
                        self.namespace,
                        self.name,
                        c.name,
                    )
                    self._kill(c, "Error", grace)
                elif kind == "startup" and tracker.ever_succeeded:
                    for other in (c.readiness, c.liveness):
                        if other is not None:
                            other.start(now)

    async def stop(self, grace: float) -> None:
        """SIGTERM every running container's process group, SIGKILL what is left after ``grace``."""
        everything = [c for c in (*self.init_containers, *self.containers) if c.running]
        for c in everything:
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        # Polling: a process exit has no event to wait on across several children.
        while time.monotonic() < deadline and any(c.running for c in everything):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for c in everything:
            if c.proc is None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, signal.SIGKILL)
            await c.proc.wait()
            code = c.proc.returncode or 0
            started = c.state.get("running", {}).get("startedAt", now_rfc3339())
            c.state = {
                "terminated": {
                    "exitCode": code if code >= 0 else 128 - code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started,
                    "finishedAt": now_rfc3339(),
                }
            }
            c.proc = None
            c.done = True
        records.remove(self.agent.agent_dir, self.uid)

    async def _finalize_deletion(self) -> None:
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
        try:
            await self.agent.api.delete(f"/api/v1/namespaces/{self.namespace}/pods/{self.name}", body)
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("pod %s/%s: final delete failed: %s", self.namespace, self.name, exc)

    # ---- status ----------------------------------------------------------------------------
    def _condition(self, kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
        status = "True" if ok else "False"
        previous = self.transitions.get(kind)
        if previous is None or previous[0] != status:
            self.transitions[kind] = (status, now_rfc3339())
        cond: dict[str, Any] = {"type": kind, "status": status, "lastProbeTime": None}
        cond["lastTransitionTime"] = self.transitions[kind][1]
        if reason and not ok:
            cond["reason"] = reason
        return cond

    def _container_status(self, c: Container) -> dict[str, Any]:
        image = str(c.spec.get("image") or "none")
        status: dict[str, Any] = {
            "name": c.name,
            "state": c.state,
            "lastState": c.last_state,
            "ready": c.ready,
            "restartCount": c.restart_count,
            "image": image,
            "imageID": "",
            "started": c.started,
        }
        if c.proc is not None:
            status["containerID"] = f"modelplane-process://{c.proc.pid}"
        return status

    def phase(self) -> str:
        if not self.initialized:
            if any(c.done and c.state["terminated"]["exitCode"] != 0 for c in self.init_containers):
                return "Failed"
            return "Pending"
        if all(c.done for c in self.containers):
            ok = all(c.state.get("terminated", {}).get("exitCode") == 0 for c in self.containers)
            return "Succeeded" if ok else "Failed"
        if any(c.running or c.restart_count > 0 or c.last_state for c in self.containers):
            return "Running"
        return "Pending"

    def status(self) -> dict[str, Any]:
        containers_ready = self.initialized and all(c.ready for c in self.containers)
        ready_reason = "ContainersNotReady" if self.initialized else "ContainersNotInitialized"
        return {
            "phase": self.phase(),
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time,
            "conditions": [
                self._condition("PodReadyToStartContainers", True),
                self._condition("Initialized", self.initialized, "ContainersNotInitialized"),
                self._condition("Ready", containers_ready, ready_reason),
                self._condition("ContainersReady", containers_ready, ready_reason),
                self._condition("PodScheduled", True),
            ],
            "initContainerStatuses": [self._container_status(c) for c in self.init_containers] or None,
            "containerStatuses": [self._container_status(c) for c in self.containers],
        }

    async def _push_status(self) -> None:
        status = self.status()
        if status == self.last_status:
            return
        try:
            await self.agent.api.patch(
                f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status", {"status": status}
            )
            self.last_status = status
        except ApiError as exc:
            if exc.status == 404:
                self.gone = True
            else:
                log.warning("pod %s/%s: status update failed: %s", self.namespace, self.name, exc)
        except Exception as exc:
            log.warning("pod %s/%s: status update failed: %s", self.namespace, self.name, exc)
