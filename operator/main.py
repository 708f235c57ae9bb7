"""Run the operator: kopf with Modelplane's handlers, a metrics endpoint and a liveness probe."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from dataclasses import dataclass, field

import kopf
from prometheus_client import start_http_server

from modelplane.kube import KubeApi, KubeClient, KubeError, load_connection
from modelplane.operator.autoscaler.scrape import LoadCache
from modelplane.operator.children import FIELD_MANAGER, OperatorSettings
from modelplane.operator.handlers import CLEANUP_TIMEOUT_SECONDS, register
from modelplane.operator.reconcile import Reconciler
from modelplane.operator.records import Records
from modelplane.resolution.resolver import Resolver

log = logging.getLogger("modelplane.operator")


@dataclass(frozen=True)
class RunOptions:
    """How the operator process runs (from the command line)."""

    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    peering: str | None = "modelplane"  # None: standalone (one replica only)
    # kopf pauses every replica that sees a peer of the same priority, so each process draws its
    # own: the replica with the highest works, the others stand by.
    peering_priority: int = field(default_factory=lambda: random.randint(1, 2**31 - 1))
    peering_lifetime_s: int = 60  # a silent peer is presumed dead after this long
    health_host: str = "0.0.0.0"  # noqa: S104 (probes come from the kubelet); also the metrics address
    health_port: int = 8080
    metrics_port: int | None = 9090
    router_metrics_urls: tuple[str, ...] = ()  # the routers' /metrics: the autoscaler's signal
    settings: OperatorSettings = field(default_factory=OperatorSettings)
    registry_cleanup_timeout_s: float = CLEANUP_TIMEOUT_SECONDS


PEERING_MANIFEST = "deploy/operator/peering.yaml"


class StartupError(RuntimeError):
    """The operator cannot start as configured; the message says what to do."""


async def check_peering(kube: KubeClient, name: str) -> None:
    """Fail at once when the peering resource is missing: with mandatory peering, kopf would wait
    for it without a word (and falling back to standalone would let two replicas work at once)."""
    try:
        found = await kube.get("kopf.dev/v1", "ClusterKopfPeering", None, name)
    except KubeError as exc:
        if exc.status == 403:
            raise StartupError(
                f"the operator may not read ClusterKopfPeering {name!r} ({exc}): "
                "apply its RBAC, deploy/operator/rbac.yaml"
            ) from exc
        raise
    if found is None:
        raise StartupError(
            f"the peering resource ClusterKopfPeering {name!r} does not exist, and the operator's "
            f"replicas coordinate through it: create it with `kubectl apply -f {PEERING_MANIFEST}` "
            "(once per cluster; the Helm chart creates it), or run a single replica with --standalone"
        )


def _configure_kopf(settings: kopf.OperatorSettings, options: RunOptions) -> None:
    peering = options.peering
    settings.persistence.finalizer = "modelplane.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modelplane.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="modelplane.io")
    settings.posting.level = logging.WARNING  # kopf's own events only for problems; ours carry the news
    settings.watching.server_timeout = 300  # re-list at least every 5 minutes: no silently stalled watch
    settings.watching.client_timeout = 330
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    if peering is None:
        settings.peering.standalone = True
    else:
        settings.peering.name = peering
        settings.peering.mandatory = True
        settings.peering.clusterwide = True
        settings.peering.priority = options.peering_priority
        settings.peering.lifetime = options.peering_lifetime_s


async def run(
    options: RunOptions,
    resolver: Resolver,
    records: Records | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run until ``stop`` is set (or forever); raises if the cluster cannot be reached.

    With ``records``, the registry is told which versions serve where (and the finalizer cleans up).
    """
    if options.metrics_port is not None:
        start_http_server(options.metrics_port, addr=options.health_host)
    kube = KubeApi(load_connection(), field_manager=FIELD_MANAGER)
    if options.peering is not None:
        try:
            await check_peering(kube, options.peering)
        except BaseException:
            await kube.close()
            raise
    registry = kopf.OperatorRegistry()
    loads = LoadCache(list(options.router_metrics_urls)) if options.router_metrics_urls else None
    reconciler = Reconciler(kube, resolver, options.settings, records)
    register(registry, reconciler, loads, cleanup_timeout=options.registry_cleanup_timeout_s)
    scraper = asyncio.create_task(loads.run()) if loads is not None else None

    # A private registry has no default login handler: authenticate like the official client does
    # (in-cluster service account, else the kubeconfig).
    kopf.on.login(registry=registry)(kopf.login_via_client)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        _configure_kopf(settings, options)

    try:
        await kopf.operator(
            registry=registry,
            clusterwide=not options.namespaces,
            namespaces=list(options.namespaces),
            liveness_endpoint=f"http://{options.health_host}:{options.health_port}/healthz",
            stop_flag=stop,
        )
    finally:
        if scraper is not None:
            scraper.cancel()
        await kube.close()


def run_forever(options: RunOptions, resolver: Resolver, records: Records | None = None) -> None:
    """Blocking entry point for the CLI."""
    asyncio.run(run(options, resolver, records))
