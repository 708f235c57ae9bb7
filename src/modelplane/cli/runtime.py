"""``modelplane runtime``: serve a Triton-layout model repository over V2 HTTP and gRPC."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelplane.cli.options import DrainDelay, DrainTimeout


def runtime(
    model_repository: Annotated[
        Path,
        typer.Option(
            "--model-repository",
            help="Folder in Triton's layout: NAME/config.pbtxt and NAME/VERSION/model.pt",
            exists=True,
            file_okay=False,
            resolve_path=True,
        ),
    ],
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "0.0.0.0",  # noqa: S104
    http_port: Annotated[int, typer.Option("--http-port", help="V2 HTTP port")] = 8000,
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="V2 gRPC port")] = 8001,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", help="Extra port for /metrics (also served on the HTTP port)"),
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1, help="Largest accepted request body (HTTP and gRPC)")
    ] = 64 * 1024 * 1024,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="torch intra-op threads (default: torch's choice)")
    ] = None,
    interop_threads: Annotated[
        int | None, typer.Option("--interop-threads", min=1, help="torch inter-op threads")
    ] = None,
    drain_timeout: DrainTimeout = 30.0,
    drain_delay: DrainDelay = 0.0,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="Where downloaded artifacts are kept (default: REPO/.cache)"),
    ] = None,
) -> None:
    """Serve the models of a repository over the KServe / Open Inference Protocol V2 (HTTP and gRPC)."""
    from modelplane.serving.runtime.server import RuntimeOptions, run

    run(
        RuntimeOptions(
            model_repository=model_repository,
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            max_body_bytes=max_body_bytes,
            threads=threads,
            interop_threads=interop_threads,
            drain_timeout_s=drain_timeout,
            drain_delay_s=drain_delay,
            cache_dir=cache_dir,
        )
    )


def prepare_model(
    model_repository: Annotated[
        Path, typer.Option("--model-repository", help="Repository folder to write into (created if missing).")
    ],
    name: Annotated[str, typer.Option("--name", help="Model name (the folder in the repository).")],
    version: Annotated[int, typer.Option("--version", min=1, help="Model version (the version folder).")],
    config_env: Annotated[
        str, typer.Option("--config-env", help="Environment variable holding the config.pbtxt text.")
    ] = "MODELPLANE_MODEL_CONFIG",
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="Artifact cache (default: REPOSITORY/.cache, as the runtime)."),
    ] = None,
    manifest_url: Annotated[
        str | None,
        typer.Option(
            "--manifest-url",
            help="A directory artifact's file list (the registry's .../versions/V/files): download "
            "every file into REPOSITORY/NAME/VERSION instead of writing a configuration.",
        ),
    ] = None,
    digest: Annotated[
        str | None,
        typer.Option("--digest", help="With --manifest-url: the file list's digest, sha256:<hex>."),
    ] = None,
) -> None:
    """Write a model's configuration into a repository and download its artifact (init container)."""
    import os

    from modelplane.serving.runtime.artifacts import ArtifactError
    from modelplane.serving.runtime.prepare import PrepareError
    from modelplane.serving.runtime.prepare import prepare_model as prepare

    if manifest_url is not None:
        from modelplane.serving.runtime.directory import fetch_directory

        if digest is None:
            raise typer.BadParameter("--manifest-url needs --digest sha256:<hex>", param_hint="--digest")
        dest = model_repository / name / str(version)
        try:
            entries = fetch_directory(manifest_url, digest, dest)
        except ArtifactError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from exc
        typer.echo(f"prepared {name} version {version}: {len(entries)} files in {dest}")
        return

    config_text = os.environ.get(config_env)
    if not config_text:
        typer.echo(f"error: ${config_env} is empty: it must hold the model's config.pbtxt", err=True)
        raise typer.Exit(code=2)
    try:
        path = prepare(model_repository, name, version, config_text, cache_dir)
    except (PrepareError, ArtifactError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"prepared {name} version {version}: {path}")
