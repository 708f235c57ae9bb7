"""``modelplane up``: the whole platform on this machine, from ModelDeployment files in a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DataDirOpt = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="MODELPLANE_DATA_DIR",
        help="Where the local stack keeps its registry, deployments, logs and state.",
        file_okay=False,
    ),
]


def up(
    data_dir: DataDirOpt = Path(".modelplane"),
    http_port: Annotated[
        int, typer.Option("--http-port", min=1, max=65535, help="Router port for V2 HTTP.")
    ] = 8080,
    grpc_port: Annotated[
        int, typer.Option("--grpc-port", min=1, max=65535, help="Router port for V2 gRPC.")
    ] = 8081,
    deployments: Annotated[
        Path | None,
        typer.Option(
            "--deployments",
            help="Folder of ModelDeployment YAML files (default: DATA_DIR/deployments; remembered).",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the whole platform on this machine: registry, router and two served demo models.

    The first run trains two small demo models, registers them and deploys them: `demo`, a
    classifier (V2 protocol), and `demo-chat`, a tiny language model trained on the docs (OpenAI API
    at /v1); later runs on the same --data-dir resume. ModelDeployment files dropped into the
    deployments folder (or sent with `modelplane deploy -f FILE`) are served within seconds. Ctrl-C
    stops everything.
    """
    from rich.console import Console

    from modelplane.local.stack import UpOptions
    from modelplane.local.stack import up as run_up

    code = run_up(
        UpOptions(data_dir=data_dir, http_port=http_port, grpc_port=grpc_port, deployments=deployments),
        Console(),
    )
    if code:
        raise typer.Exit(code=code)
