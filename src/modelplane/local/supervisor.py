"""The local supervisor: ModelDeployment files in a folder → runtime processes on loopback.

Each step is level-triggered, like the operator's reconcile: read the folder (bad files are
reported, the others go on), resolve each model through the registry, ask the operator's pure
autoscaling :func:`decide` for the replicas (scale to zero and activation included), ask the pure
:func:`plan` what to start and stop, do it, and hand the router the ready endpoints. Only the
thin I/O lives here; the decisions are tested on their own.

A replica runs what a serving pod runs (:mod:`modelplane.local.commands`): ``modelplane runtime``
for a tensor model; for a causal language model ``modelplane prepare-model`` (the pod's init
container) and, once it succeeded, ``modelplane llm-runtime``, whose OpenAI API the router serves
at ``/v1``. A replica counts as starting until its last process is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from modelplane.api.metrics import LoadReport
from modelplane.autoscaling.decide import Decision, Settings
from modelplane.autoscaling.load import ConcurrencyAverager, ModelLoad, Scrape
from modelplane.autoscaling.scaler import PodCounts, Scaler
from modelplane.local.commands import replica_commands, revision
from modelplane.local.layout import DataDir, read_json, write_json
from modelplane.local.plan import Action, ReplicaView, Start, Stop, Want, plan
from modelplane.local.processes import free_port, modelplane_command, spawn, terminate
from modelplane.local.specs import LocalDeployment, SpecError, folder_signature, load_directory
from modelplane.resolution.resolver import ResolutionError, Resolved, Resolver, ServingOptions, spec_sources
from modelplane.serving.router.balancing import Backend, Endpoint
from modelplane.serving.router.routes import ModelRoute

log = logging.getLogger("modelplane.supervisor")

STEP_SECONDS = 1.0
RESOLVE_EVERY_S = 15.0
MAX_BACKOFF_S = 30.0
ARTIFACT_TOKEN_ENV = "MODELPLANE_ARTIFACT_TOKEN"  # noqa: S105 (a variable name)


class RouteSink(Protocol):
    """Where the supervisor pushes the router's table (the router's pushed discovery)."""

    def set_routes(self, routes: dict[str, ModelRoute]) -> None: ...


@dataclass
class Replica:
    """One replica: its current process, and the commands still to run after it (``pending``)."""

    deployment: str
    slot: int
    revision: str
    version: int
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int | None  # None: no gRPC (a language model's runtime speaks HTTP only)
    log_path: Path
    started: float
    ready: bool = False
    pending: list[list[str]] = field(default_factory=list)

    def step_done(self) -> bool:
        """The current process succeeded and another command is to run next."""
        return bool(self.pending) and self.process.poll() == 0

    def running(self) -> bool:
        return self.process.poll() is None

    def view(self) -> ReplicaView:
        if self.step_done():
            return ReplicaView(self.deployment, self.slot, self.revision, "starting")
        if self.process.poll() is not None:
            return ReplicaView(self.deployment, self.slot, self.revision, "exited")
        ready = self.ready and not self.pending
        return ReplicaView(self.deployment, self.slot, self.revision, "ready" if ready else "starting")

    def endpoint(self) -> Endpoint:
        return Endpoint(
            key=f"127.0.0.1:{self.http_port}",
            http=f"http://127.0.0.1:{self.http_port}",
            grpc=None if self.grpc_port is None else f"127.0.0.1:{self.grpc_port}",
        )


@dataclass
class Tracked:
    """What the supervisor knows about one deployment between steps."""

    deployment: LocalDeployment
    created: str
    scale: int
    resolved: Resolved | None = None
    resolve_key: str = ""
    resolved_at: float = -1e9
    problem: str | None = None
    revision: str | None = None
    scaler: Scaler = field(default_factory=Scaler)
    decision: Decision | None = None


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _initial_scale(deployment: LocalDeployment) -> int:
    """``replicas`` when the file sets it, else the autoscaler's floor (locally nothing else writes it)."""
    spec = deployment.spec
    return spec.replicas if "replicas" in spec.model_fields_set else spec.autoscaling.min_replicas


class Supervisor:
    """Reconciles the deployment folder into runtime processes; one instance per ``modelplane up``."""

    def __init__(
        self,
        data: DataDir,
        deployments_dir: Path,
        resolver: Resolver,
        router: RouteSink,
        router_load: Callable[[], LoadReport],
        *,
        artifact_token: str,
        router_http_port: int,
        drain_timeout_s: float = 10.0,
    ) -> None:
        self.data = data
        self.deployments_dir = deployments_dir
        self.resolver = resolver
        self.router = router
        self.router_load = router_load
        self._averager = ConcurrencyAverager()
        self.artifact_token = artifact_token
        self.router_http_port = router_http_port
        self.drain_timeout_s = drain_timeout_s
        self.tracked: dict[str, Tracked] = {}
        self.replicas: dict[tuple[str, int], Replica] = {}
        self.errors: list[SpecError] = []
        self.restarts: dict[tuple[str, int], int] = {}
        self.blocked: dict[tuple[str, int], float] = {}
        self._signature = ""
        self._activations: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping: set[asyncio.Task[int]] = set()
        self._http: httpx.AsyncClient | None = None
        self._state = read_json(data.state_file)

    @property
    def has_read_folder(self) -> bool:
        return self._signature != ""

    # -- called by the router ---------------------------------------------------------------------

    async def activate(self, model: str) -> None:
        """A request waits for ``model`` (scaled to zero): scale it up at the next step, now."""
        log.info("activation requested for %s", model)
        self._activations.add(model)
        self._wake.set()

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Step until ``stop`` is set; a failing step is logged and retried."""
        while not stop.is_set():
            try:
                await self.step(time.monotonic())
            except Exception:
                log.exception("supervisor step failed (retrying)")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(stop.wait(), self._wake.wait()), timeout=STEP_SECONDS)

    async def step(self, now: float) -> None:
        self._read_folder()
        for tracked in self.tracked.values():
            await self._resolve(tracked, now)
        await self._check_health()
        loads = self._loads()
        for name, tracked in self.tracked.items():
            self._autoscale(name, tracked, loads.get(name), now)
        wants = {
            name: Want(t.scale, t.revision) for name, t in self.tracked.items() if t.revision is not None
        }
        views = [r.view() for r in self.replicas.values()]
        for action in plan(wants, views, self.blocked, now):
            await self._act(action, now)
        self.router.set_routes(self.routes())
        self._write_status()

    async def shutdown(self) -> None:
        """Stop every runtime (each drains its in-flight requests first)."""
        self.router.set_routes({})
        replicas = list(self.replicas.values())
        self.replicas.clear()
        await asyncio.gather(
            *(terminate(r.process, self.drain_timeout_s) for r in replicas), *list(self._stopping)
        )
        if self._http is not None:
            await self._http.aclose()
        self.data.status_file.unlink(missing_ok=True)

    # -- reading and resolving --------------------------------------------------------------------

    def _read_folder(self) -> None:
        signature = folder_signature(self.deployments_dir)
        if signature == self._signature:
            return
        self._signature = signature
        found, errors = load_directory(self.deployments_dir)
        for error in errors:
            if error not in self.errors:
                log.error("%s (this file is ignored until it is fixed)", error)
        self.errors = errors
        created: dict[str, str] = self._state.setdefault("created", {})
        for name in list(self.tracked):
            if name not in found:
                log.info("deployment %s was removed", name)
                del self.tracked[name]
                created.pop(name, None)
        for name, deployment in found.items():
            tracked = self.tracked.get(name)
            if tracked is None:
                created.setdefault(name, _now_iso())
                self.tracked[name] = Tracked(deployment, created[name], _initial_scale(deployment))
                log.info("deployment %s from %s", name, deployment.path)
            elif tracked.deployment.spec != deployment.spec:
                log.info("deployment %s changed", name)
                tracked.deployment = deployment
                if (
                    deployment.spec.autoscaling.mode != "builtin"
                    or "replicas" in deployment.spec.model_fields_set
                ):
                    tracked.scale = _initial_scale(deployment)
        write_json(self.data.state_file, self._state)

    async def _resolve(self, tracked: Tracked, now: float) -> None:
        spec = tracked.deployment.spec
        options = ServingOptions.from_spec(spec)
        key = repr((spec.model, options, spec.llm, spec.runtime))
        if key == tracked.resolve_key and now - tracked.resolved_at < RESOLVE_EVERY_S:
            return
        tracked.resolve_key, tracked.resolved_at = key, now
        try:
            resolved = await self.resolver.resolve(
                spec.model.name, spec_sources(spec.model), "stable", options
            )
        except ResolutionError as exc:
            if tracked.problem != exc.message:
                log.error("deployment %s: %s: %s", tracked.deployment.name, exc.reason, exc.message)
            tracked.problem = exc.message
            if not exc.temporary:
                tracked.resolved, tracked.revision = None, None
            return
        tracked.problem = None
        tracked.resolved = resolved
        wanted = revision(spec, resolved.served, self.drain_timeout_s)
        if wanted != tracked.revision:
            self._write_repository(tracked.deployment.name, wanted, resolved)
            log.info("deployment %s: %s (revision %s)", tracked.deployment.name, resolved.description, wanted)
            tracked.revision = wanted

    def _repository(self, deployment: str, revision: str) -> Path:
        return self.data.repositories / deployment / revision

    def _write_repository(self, deployment: str, revision: str, resolved: Resolved) -> None:
        served = resolved.served
        folder = self._repository(deployment, revision) / served.model_name
        (folder / str(served.version or 1)).mkdir(parents=True, exist_ok=True)
        if served.kind == "tensor":  # a language model's directory is fetched by its replicas
            (folder / "config.pbtxt").write_text(served.config_pbtxt)

    # -- processes --------------------------------------------------------------------------------

    async def _check_health(self) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=1.0, trust_env=False)
        for replica in self.replicas.values():
            if replica.step_done():
                self._next_command(replica)
        starting = [r for r in self.replicas.values() if not r.ready and r.running() and not r.pending]
        results = await asyncio.gather(
            *(self._http.get(f"http://127.0.0.1:{r.http_port}/v2/health/ready") for r in starting),
            return_exceptions=True,
        )
        for replica, result in zip(starting, results, strict=True):
            if isinstance(result, httpx.Response) and result.status_code == 200:
                replica.ready = True
                self.restarts.pop((replica.deployment, replica.slot), None)
                log.info(
                    "%s replica %d is ready on port %d", replica.deployment, replica.slot, replica.http_port
                )

    async def _act(self, action: Action, now: float) -> None:
        key = (action.deployment, action.slot)
        if isinstance(action, Stop):
            replica = self.replicas.pop(key, None)
            if replica is None or replica.step_done():
                return  # (or stopped between its model download and its runtime: nothing runs)
            if replica.process.poll() is not None:
                restarts = self.restarts.get(key, 0) + 1
                self.restarts[key] = restarts
                delay = min(MAX_BACKOFF_S, 2.0 ** (restarts - 1))
                self.blocked[key] = now + delay
                log.warning(
                    "%s replica %d exited with %s; restarting in %.0fs (log: %s)",
                    replica.deployment, replica.slot, replica.process.returncode, delay, replica.log_path,
                )  # fmt: skip
                return
            log.info("stopping %s replica %d: %s", replica.deployment, replica.slot, action.reason)
            self.router.set_routes(self.routes(exclude=key))  # no new requests before it drains
            task = asyncio.create_task(terminate(replica.process, self.drain_timeout_s))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
            return
        self._start(action, now)

    def _spawn(self, command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        return spawn([*modelplane_command(), *command], log_path, {ARTIFACT_TOKEN_ENV: self.artifact_token})

    def _next_command(self, replica: Replica) -> None:
        """The replica's previous command succeeded (a model download): run the next one."""
        command = replica.pending.pop(0)
        replica.process = self._spawn(command, replica.log_path)
        log.info(
            "%s replica %d: started %s (pid %d)",
            replica.deployment, replica.slot, command[0], replica.process.pid,
        )  # fmt: skip

    def _start(self, action: Start, now: float) -> None:
        tracked = self.tracked[action.deployment]
        assert tracked.resolved is not None
        served = tracked.resolved.served
        http_port = free_port()
        grpc_port = free_port() if served.kind == "tensor" else None
        log_path = self.data.logs / f"runtime-{action.deployment}-{action.slot}.log"
        first, *pending = replica_commands(
            tracked.deployment.spec,
            served,
            self._repository(action.deployment, action.revision),
            http_port=http_port,
            grpc_port=grpc_port,
            cache_dir=self.data.cache,
            drain_timeout_s=self.drain_timeout_s,
        )
        process = self._spawn(first, log_path)
        self.replicas[(action.deployment, action.slot)] = Replica(
            action.deployment,
            action.slot,
            action.revision,
            served.version or 1,
            process,
            http_port,
            grpc_port,
            log_path,
            now,
            pending=pending,
        )
        self.blocked.pop((action.deployment, action.slot), None)
        log.info(
            "started %s replica %d (pid %d, port %d)", action.deployment, action.slot, process.pid, http_port
        )

    # -- autoscaling ------------------------------------------------------------------------------

    def _loads(self) -> dict[str, ModelLoad]:
        """Requests per model, as the operator's autoscaler reads them from its routers.

        Each call yields the average concurrency since the previous call (the first: the gauges),
        so it is called once per step.
        """
        scrape = Scrape(self.router_load(), time.monotonic())
        return self._averager.update({"local": scrape})

    def _autoscale(self, name: str, tracked: Tracked, load: ModelLoad | None, now: float) -> None:
        spec = tracked.deployment.spec
        if spec.autoscaling.mode != "builtin":
            tracked.scale = _initial_scale(tracked.deployment)
            return
        mine = [r.view() for r in self.replicas.values() if r.deployment == name]
        pods = PodCounts(
            ready=sum(v.state == "ready" for v in mine), starting=sum(v.state == "starting" for v in mine)
        )
        decision = tracked.scaler.step(
            Settings.from_spec(spec.autoscaling),
            now,
            load,
            tracked.scale,
            pods,
            activation_requested=name in self._activations,
        )
        if decision.desired != tracked.scale:
            log.info("%s: replicas %d -> %d (%s)", name, tracked.scale, decision.desired, decision.reason)
        tracked.scale = decision.desired
        tracked.decision = decision
        if tracked.scale > 0:
            self._activations.discard(name)

    # -- routes and status ------------------------------------------------------------------------

    def routes(self, exclude: tuple[str, int] | None = None) -> dict[str, ModelRoute]:
        """The router's table: ready replicas per deployment; none ready means buffer and activate."""
        routes: dict[str, ModelRoute] = {}
        for name, tracked in self.tracked.items():
            if tracked.resolved is None:
                continue
            current = str(tracked.resolved.served.version or 1)
            ready = [
                r
                for key, r in sorted(self.replicas.items())
                if r.deployment == name and r.view().state == "ready" and key != exclude
            ]
            endpoints: dict[str, list[Endpoint]] = {}
            for replica in ready:
                endpoints.setdefault(str(replica.version), []).append(replica.endpoint())
            if current in endpoints:
                backends = [Backend(version=current, weight=100)]
            elif endpoints:
                backends = [Backend(version=v, weight=100) for v in endpoints]
            else:
                backends = [Backend(version=current, weight=100)]
            routes[name] = ModelRoute(
                name=name,
                backends=backends,
                endpoints=endpoints,
                scaled_to_zero=True,
                backend_model=tracked.deployment.spec.model.name,
                generative=tracked.resolved.served.kind == "generative",
            )
        return routes

    def status(self) -> list[dict[str, Any]]:
        """One row per deployment, with the columns of `kubectl get md` and the details `describe` shows."""
        rows = []
        for name, tracked in sorted(self.tracked.items()):
            spec = tracked.deployment.spec
            mine = [r for r in self.replicas.values() if r.deployment == name]
            ready = sum(1 for r in mine if r.view().state == "ready")
            served = tracked.resolved.served if tracked.resolved else None
            path = "/v1" if served is not None and served.kind == "generative" else f"/v2/models/{name}"
            rows.append(
                {
                    "name": name,
                    "file": str(tracked.deployment.path),
                    "model": spec.model.name,
                    "version": served.version if served else None,
                    "resolved": tracked.resolved.description if tracked.resolved else None,
                    "ready": f"{ready}/{tracked.scale}",
                    "readyReplicas": ready,
                    "replicas": tracked.scale,
                    "gpus": spec.resources.gpu.count * len(mine),
                    "url": f"http://127.0.0.1:{self.router_http_port}{path}",
                    "created": tracked.created,
                    "problem": tracked.problem,
                    "autoscaling": {
                        "mode": spec.autoscaling.mode,
                        "minReplicas": spec.autoscaling.min_replicas,
                        "maxReplicas": spec.autoscaling.max_replicas,
                        "lastDecision": tracked.decision.reason if tracked.decision else None,
                    },
                    "processes": [
                        {
                            "slot": r.slot,
                            "pid": r.process.pid,
                            "state": r.view().state,
                            "http": f"127.0.0.1:{r.http_port}",
                            "grpc": "-" if r.grpc_port is None else f"127.0.0.1:{r.grpc_port}",
                            "revision": r.revision,
                            "log": str(r.log_path),
                        }
                        for r in sorted(mine, key=lambda r: r.slot)
                    ],
                }
            )
        return rows

    def _write_status(self) -> None:
        write_json(
            self.data.status_file,
            {
                "updated": _now_iso(),
                "deploymentsDir": str(self.deployments_dir),
                "deployments": self.status(),
                "errors": [str(e) for e in self.errors],
            },
        )


async def _first(*waits: Any) -> None:
    """Return when the first of the awaitables finishes (cancel the rest)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
