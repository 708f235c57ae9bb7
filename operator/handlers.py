"""kopf wiring: which events trigger a reconcile, and how failures are retried.

Every trigger funnels into :class:`Coalescer`, which runs at most one reconcile per
ModelDeployment at a time and folds the triggers that arrive meanwhile into one more run. Retry
policy is carried by the exception type, as kopf intends: a temporary failure (registry down, API
conflict) raises ``kopf.TemporaryError`` with a delay; a permanent one (unknown model) is reported
as a condition and waits for the next spec change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf
from prometheus_client import Counter, Histogram

from modelplane.api import v1alpha1 as api
from modelplane.api.labels import DEPLOYMENT_LABEL
from modelplane.kube import KubeError
from modelplane.operator.autoscaler.loop import Autoscaler, Stopped
from modelplane.operator.autoscaler.scrape import LoadCache
from modelplane.operator.events import post_event
from modelplane.operator.reconcile import Outcome, Reconciler
from modelplane.operator.records import RecordError, Records, recorded_in, records_to_clean, uses_registry

log = logging.getLogger("modelplane.operator")

RECONCILES = Counter("modelplane_operator_reconciles_total", "Reconciles run, by result", ["result"])
RECONCILE_SECONDS = Histogram("modelplane_operator_reconcile_duration_seconds", "Time spent in one reconcile")
CHILD_WRITES = Counter("modelplane_operator_child_writes_total", "Children applied or deleted", ["kind"])

RESYNC_SECONDS = 30.0
#: How long a deletion keeps retrying to remove the registry's records before it lets go.
CLEANUP_TIMEOUT_SECONDS = 600.0
CLEANUP_MAX_DELAY_SECONDS = 60.0


def cleanup_delay(retry: int) -> float:
    """Back-off between attempts to remove the registry's records: 1, 2, 4, ... up to 60 s."""
    return float(min(CLEANUP_MAX_DELAY_SECONDS, 2.0 ** min(retry, 10)))


class Coalescer:
    """One reconcile at a time per key; triggers during a run cause exactly one more run.

    Each trigger takes a number. A run covers every trigger numbered before it started, so the
    triggers that queued behind a run share the one run that starts next, and return its outcome.
    A failed run covers nothing: the next trigger in line runs again.
    """

    def __init__(self, run: Callable[[str, str], Awaitable[Outcome]]) -> None:
        self._run = run
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._triggers: dict[tuple[str, str], int] = {}
        self._covered: dict[tuple[str, str], tuple[int, Outcome]] = {}
        self._scheduled: set[tuple[str, str]] = set()

    async def reconcile(self, namespace: str, name: str) -> Outcome:
        key = (namespace, name)
        ticket = self._triggers[key] = self._triggers.get(key, 0) + 1
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            covered = self._covered.get(key)
            if covered is not None and covered[0] >= ticket:
                return covered[1]  # a run that started after this trigger arrived served it
            starting = self._triggers[key]
            outcome = await self._timed(namespace, name)
            self._covered[key] = (starting, outcome)
            return outcome

    def poke(self, namespace: str, name: str, delay: float = 0.3) -> None:
        """Reconcile soon, from a watch event; a burst of events within ``delay`` makes one run.

        A temporary failure (API timeout, conflict, throttling) pokes again with a doubled delay
        (up to 30 s), so a child's change is not left to the periodic resync; other errors are
        logged.
        """
        key = (namespace, name)
        if key in self._scheduled:
            return
        self._scheduled.add(key)

        async def later() -> Outcome:
            await asyncio.sleep(delay)
            self._scheduled.discard(key)
            try:
                return await self.reconcile(namespace, name)
            except KubeError as exc:
                if exc.temporary:
                    self.poke(namespace, name, delay=min(30.0, max(1.0, delay * 2)))
                raise

        task = asyncio.get_running_loop().create_task(later())
        task.add_done_callback(_log_failure)

    async def _timed(self, namespace: str, name: str) -> Outcome:
        started = time.perf_counter()
        try:
            outcome = await self._run(namespace, name)
        except Exception:
            RECONCILES.labels(result="error").inc()
            raise
        finally:
            RECONCILE_SECONDS.observe(time.perf_counter() - started)
        RECONCILES.labels(result="retry" if outcome.retry_after else "ok").inc()
        for change in outcome.applied + outcome.deleted:
            CHILD_WRITES.labels(kind=change.split("/", 1)[0]).inc()
        return outcome


def _log_failure(task: asyncio.Task[Outcome]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("reconcile after a child event failed: %s", exc)


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    loads: LoadCache | None = None,
    cleanup_timeout: float = CLEANUP_TIMEOUT_SECONDS,
) -> Coalescer:
    """Attach the handlers to ``registry``; returns the coalescer (tests use it directly).

    With ``loads`` (the routers' metrics), every ModelDeployment also gets an autoscaling daemon.
    With the reconciler's registry records, ModelDeployments served from the registry get the
    one finalizer, whose handler removes their records.
    """
    coalescer = Coalescer(reconciler.reconcile)
    resource = (api.GROUP, api.VERSION, api.PLURAL)

    if loads is not None:
        cache = loads

        async def autoscale(namespace: str | None, name: str | None, stopped: Stopped, **_: Any) -> None:
            assert namespace is not None
            assert name is not None
            await Autoscaler(namespace, name, reconciler.kube, cache).run(stopped)

        kopf.daemon(*resource, registry=registry, cancellation_timeout=5.0)(autoscale)

    async def on_change(namespace: str | None, name: str | None, **_: Any) -> None:
        assert namespace is not None
        assert name is not None
        try:
            outcome = await coalescer.reconcile(namespace, name)
        except KubeError as exc:
            if exc.temporary:
                raise kopf.TemporaryError(str(exc), delay=5) from exc
            raise
        if outcome.retry_after is not None:
            raise kopf.TemporaryError(outcome.retry_reason, delay=outcome.retry_after)

    kopf.on.create(*resource, registry=registry)(on_change)
    kopf.on.update(*resource, registry=registry)(on_change)
    kopf.on.resume(*resource, registry=registry)(on_change)

    # The periodic resync follows aliases the registry moves. kopf puts its finalizer on every
    # object a timer runs for, so only models from the registry get one (a storageUri cannot move;
    # child events and kopf's retries keep those converged) and the finalizer stays where outside
    # state (the registry's records) needs it.
    def from_registry(spec: Mapping[str, Any], **_: Any) -> bool:
        return uses_registry(spec)

    kopf.timer(
        *resource,
        registry=registry,
        interval=RESYNC_SECONDS,
        initial_delay=RESYNC_SECONDS,
        when=from_registry,
    )(on_change)

    async def on_child_event(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        owner = labels.get(DEPLOYMENT_LABEL)
        if owner and namespace:
            coalescer.poke(namespace, owner)

    if reconciler.records is not None:
        _register_cleanup(registry, reconciler, reconciler.records, cleanup_timeout)

    child_labels = {DEPLOYMENT_LABEL: kopf.PRESENT}
    kopf.on.event("apps", "v1", "deployments", labels=child_labels, registry=registry)(on_child_event)
    kopf.on.event("", "v1", "pods", labels=child_labels, registry=registry)(on_child_event)
    return coalescer


def _register_cleanup(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, records: Records, timeout: float
) -> None:
    """The finalizer's handler: remove the registry's records of a deleted ModelDeployment.

    Policy: a registry that cannot be reached is retried with exponential back-off (1 s doubling
    to 60 s); after ``timeout`` seconds the handler gives up, kopf removes the finalizer anyway
    and a Warning Event names the records left behind (an administrator removes them with the
    registry's API). A deletion is thus delayed by an outage, never blocked forever.
    """
    resource = (api.GROUP, api.VERSION, api.PLURAL)

    def needs_cleanup(spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any) -> bool:
        return uses_registry(spec) or bool(recorded_in(status))

    async def on_delete(
        namespace: str | None,
        name: str | None,
        body: kopf.Body,
        status: Mapping[str, Any],
        retry: int,
        runtime: Any,
        **_: Any,
    ) -> None:
        assert namespace is not None
        assert name is not None
        left = sorted(records_to_clean(status))
        for record in left:
            try:
                await records.remove(record, namespace, name)
            except RecordError as exc:
                out_of_time = runtime.total_seconds() + cleanup_delay(retry) >= timeout
                if exc.temporary and not out_of_time:
                    raise kopf.TemporaryError(str(exc), delay=cleanup_delay(retry)) from exc
                await post_event(
                    reconciler.kube,
                    dict(body),
                    "Warning",
                    "RegistryRecordsLeft",
                    f"deleted without removing the registry's record(s) "
                    f"{', '.join(f'{r.model} v{r.version}' for r in left)}: {exc}",
                    reconciler.kube.field_manager,
                )
                return

    # kopf keeps a handler's retry state in an annotation named after its id: name it plainly (a
    # nested function's default id starts with "_" and the API server refuses it as a key).
    kopf.on.delete(
        *resource, registry=registry, id="registry-records", when=needs_cleanup, timeout=timeout + 60
    )(on_delete)
