"""``modelplane router``: the model-aware V2 router (HTTP and gRPC)."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class Discovery(StrEnum):
    kubernetes = "kubernetes"
    static = "static"


def router(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="V2 HTTP port.")] = 8080,
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="V2 gRPC port.")] = 8081,
    discovery: Annotated[
        Discovery, typer.Option("--discovery", help="Where routes come from: the cluster, or a YAML file.")
    ] = Discovery.static,
    routes: Annotated[
        Path | None,
        typer.Option(
            "--routes", help="Routes file for --discovery static (reloaded when it changes).", dir_okay=False
        ),
    ] = None,
    default_namespace: Annotated[
        str, typer.Option("--default-namespace", help="Namespace of /v2/models/NAME without a /ns/ prefix.")
    ] = "default",
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", min=1, help="Largest request body.")] = 64
    * 1024
    * 1024,
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", min=0.1, help="Seconds per request.")
    ] = 120.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            "--body-timeout", min=0.1, help="Seconds a client gets to send a request body (then 408)."
        ),
    ] = 30.0,
    queue_size: Annotated[
        int, typer.Option("--queue-size", min=1, help="Requests held per model while it scales up from zero.")
    ] = 100,
    queue_timeout: Annotated[
        float, typer.Option("--queue-timeout", min=0.1, help="Seconds a held request waits before a 503.")
    ] = 60.0,
    drain_timeout: Annotated[
        float, typer.Option("--drain-timeout", min=0.0, help="Seconds in-flight requests get on SIGTERM.")
    ] = 30.0,
    drain_delay: Annotated[
        float,
        typer.Option(
            "--drain-delay",
            min=0.0,
            help="Seconds to keep answering, reported not ready, after SIGTERM before refusing connections "
            "(while the endpoint leaves the Service).",
        ),
    ] = 0.0,
) -> None:
    """Route V2 inference requests (HTTP and gRPC) to the ready pods of each model version."""
    from modelplane.serving.router.routes import RoutesError
    from modelplane.serving.router.server import RouterOptions, RouterSettings, serve

    if discovery is Discovery.static and routes is None:
        raise typer.BadParameter("--discovery static needs --routes FILE", param_hint="--routes")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = RouterOptions(
        host=host,
        port=port,
        grpc_port=grpc_port,
        discovery=discovery.value,
        routes_file=routes,
        settings=RouterSettings(
            default_namespace=default_namespace,
            max_body_bytes=max_body_bytes,
            request_timeout_s=request_timeout,
            body_timeout_s=body_timeout,
            queue_size=queue_size,
            queue_timeout_s=queue_timeout,
            drain_timeout_s=drain_timeout,
        ),
        drain_delay_s=drain_delay,
    )
    try:
        import uvloop

        uvloop.run(serve(options))
    except RoutesError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    except OSError as exc:
        typer.echo(
            f"error: cannot listen on {host}:{port}/{grpc_port}: {exc}. Pick free ports with "
            "--port/--grpc-port.",
            err=True,
        )
        raise typer.Exit(code=2) from exc
    except KeyboardInterrupt:
        pass
