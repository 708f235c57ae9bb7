"""``modelplane operator``: run the ModelDeployment operator (kopf) against the current cluster."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from modelplane.operator.children import ARTIFACT_TOKEN_SECRET


def operator(
    registry_url: Annotated[
        str, typer.Option("--registry-url", envvar="MODELPLANE_REGISTRY_URL", help="The registry's base URL.")
    ],
    registry_token_file: Annotated[
        Path | None,
        typer.Option(
            "--registry-token-file",
            help="File with the registry token (else $MODELPLANE_REGISTRY_TOKEN).",
            dir_okay=False,
        ),
    ] = None,
    artifact_base_url: Annotated[
        str | None,
        typer.Option("--artifact-base-url", help="Registry URL as pods reach it (default: --registry-url)."),
    ] = None,
    artifact_token_secret: Annotated[
        str,
        typer.Option(
            "--artifact-token-secret",
            help="Secret (key `token`) in each model namespace that serving pods download artifacts "
            "with: create it with a registry token that has the read scope (`kubectl create secret "
            "generic modelplane-artifact-token -n NAMESPACE --from-literal=token=TOKEN`). The Helm "
            "chart's default too; '' for a registry that needs no token.",
        ),
    ] = ARTIFACT_TOKEN_SECRET,
    runtime_image: Annotated[
        str | None, typer.Option("--runtime-image", help="Default runtime image.")
    ] = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Watch only these namespaces (default: all)."),
    ] = None,
    peering_priority: Annotated[
        int | None,
        typer.Option(
            "--peering-priority",
            min=1,
            help="Priority among peered replicas; the highest works (default: random per process).",
        ),
    ] = None,
    peering_lifetime: Annotated[
        int,
        typer.Option("--peering-lifetime", min=5, help="Seconds before a silent peer is presumed dead."),
    ] = 60,
    registry_records: Annotated[
        bool,
        typer.Option(
            "--registry-records/--no-registry-records",
            help="Tell the registry which versions serve where (needs the write scope); "
            "the finalizer removes the records on deletion.",
        ),
    ] = True,
    registry_cleanup_timeout: Annotated[
        float,
        typer.Option(
            "--registry-cleanup-timeout",
            min=0,
            help="Seconds a deletion retries removing its registry records before it lets go.",
        ),
    ] = 600.0,
    standalone: Annotated[
        bool, typer.Option("--standalone", help="No peering: only for a single replica (development).")
    ] = False,
    peering: Annotated[
        str,
        typer.Option(
            "--peering",
            help="The ClusterKopfPeering the replicas coordinate through; it must exist "
            "(`kubectl apply -f deploy/operator/peering.yaml` creates `modelplane`).",
        ),
    ] = "modelplane",
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Address the liveness and metrics endpoints listen on (e.g. the pod IP)."
        ),
    ] = "0.0.0.0",  # noqa: S104 (probes and scrapes come from outside the pod)
    health_port: Annotated[
        int, typer.Option("--health-port", help="Liveness endpoint port (/healthz).")
    ] = 8080,
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="Prometheus metrics port.")] = 9090,
    router_metrics_url: Annotated[
        list[str] | None,
        typer.Option(
            "--router-metrics-url", help="A router's /metrics URL (repeat); enables the autoscaler."
        ),
    ] = None,
    drain_seconds: Annotated[
        int, typer.Option("--drain-seconds", min=0, help="Seconds a serving pod drains on termination.")
    ] = 30,
    drain_delay_seconds: Annotated[
        int,
        typer.Option(
            "--drain-delay-seconds",
            min=0,
            help="Seconds a terminating serving pod keeps answering (while not ready) before it drains.",
        ),
    ] = 5,
) -> None:
    """Reconcile ModelDeployments into serving pods, report their status, and scale them with load."""
    from modelplane.operator.children import OperatorSettings
    from modelplane.operator.main import RunOptions, StartupError, run_forever
    from modelplane.operator.registry_records import RegistryRecords
    from modelplane.resolution.registry import RegistryResolver

    token = os.environ.get("MODELPLANE_REGISTRY_TOKEN")
    if registry_token_file is not None:
        try:
            token = registry_token_file.read_text().strip()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {registry_token_file}: {exc}") from exc
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = OperatorSettings(
        artifact_token_secret=artifact_token_secret or None,
        drain_seconds=drain_seconds,
        drain_delay_seconds=drain_delay_seconds,
    )
    if runtime_image:
        settings = dataclasses.replace(settings, runtime_image=runtime_image)
    options = RunOptions(
        namespaces=tuple(namespace or ()),
        peering=None if standalone else peering,
        health_host=host,
        peering_lifetime_s=peering_lifetime,
        registry_cleanup_timeout_s=registry_cleanup_timeout,
        health_port=health_port,
        metrics_port=metrics_port,
        router_metrics_urls=tuple(router_metrics_url or ()),
        settings=settings,
    )
    if peering_priority is not None:
        options = dataclasses.replace(options, peering_priority=peering_priority)
    resolver = RegistryResolver(base_url=registry_url, token=token, artifact_base_url=artifact_base_url)
    records = RegistryRecords(base_url=registry_url, token=token) if registry_records else None
    try:
        run_forever(options, resolver, records)
    except StartupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
