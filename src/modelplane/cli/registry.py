"""``modelplane registry ...``: run the registry and work with models, versions, aliases and tokens."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

app = typer.Typer(name="registry", help="The model registry: serve it, or use it.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models.", no_args_is_help=True)
versions_app = typer.Typer(help="Model versions and their artifacts.", no_args_is_help=True)
aliases_app = typer.Typer(help="Aliases such as production → 3.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (admin).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(versions_app, name="versions")
app.add_typer(aliases_app, name="aliases")
app.add_typer(tokens_app, name="tokens")
console = Console()
err_console = Console(stderr=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="MODELPLANE_REGISTRY_URL", help="Registry base URL.")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="MODELPLANE_REGISTRY_TOKEN", help="API token.", show_default=False),
]
DEFAULT_URL = "http://127.0.0.1:8080"


def _client(url: str, token: str | None) -> Any:
    from modelplane.registry_client.client import RegistryClient

    return RegistryClient(url, token)


def _run(fn: Any) -> Any:
    from modelplane.registry_client.client import RegistryClientError

    try:
        return fn()
    except RegistryClientError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=1) from None


def _print_json(value: Any) -> None:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    console.print_json(json.dumps(value))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL: sqlite:///path.db or postgresql://user@host/db.", show_default=False
        ),
    ] = None,
    artifact_root: Annotated[
        Path | None,
        typer.Option(help="Directory of the content-addressed artifact store.", show_default=False),
    ] = None,
    max_artifact_bytes: Annotated[int | None, typer.Option(help="Largest artifact accepted.")] = None,
    anonymous_read: Annotated[bool, typer.Option(help="Allow reads without a token.")] = False,
    webhook_allow_loopback: Annotated[
        bool, typer.Option(help="Allow webhooks to 127.0.0.0/8 and ::1.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Run the registry (migrations run first; MODELPLANE_REGISTRY_BOOTSTRAP_TOKEN creates an admin token)."""
    import dataclasses

    from modelplane.serving.registry.config import Settings
    from modelplane.serving.registry.server import serve as run_server

    settings = Settings.from_env(database_url=database_url, artifact_root=artifact_root)
    changes: dict[str, Any] = {}
    if max_artifact_bytes is not None:
        changes["max_artifact_bytes"] = max_artifact_bytes
    if anonymous_read:
        changes["anonymous_read"] = True
    if webhook_allow_loopback:
        changes["webhooks"] = dataclasses.replace(settings.webhooks, allow_loopback=True)
    run_server(dataclasses.replace(settings, **changes), host, port, log_level)


@app.command()
def migrate(
    database_url: Annotated[str, typer.Option(help="SQLAlchemy URL of the registry database.")],
    revision: Annotated[str, typer.Option(help="Target revision ('head', 'base', or an id).")] = "head",
    down: Annotated[bool, typer.Option("--down", help="Downgrade to the revision instead.")] = False,
) -> None:
    """Run the database migrations (the server also runs them to head on start-up)."""
    from modelplane.serving.registry import migrate as mig

    if down:
        mig.downgrade(database_url, revision)
    else:
        mig.upgrade(database_url, revision)
    console.print(f"database at revision {mig.current_revision_for(database_url)}")


# --- models ---------------------------------------------------------------------------------------


@models_app.command("create")
def models_create(
    name: str,
    description: Annotated[str, typer.Option()] = "",
    tag: Annotated[list[str] | None, typer.Option(help="key=value; repeatable")] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    tags = dict(t.split("=", 1) for t in tag or [] if "=" in t)
    with _client(url, token) as c:
        _print_json(_run(lambda: c.create_model(name, description, tags)))


@models_app.command("list")
def models_list(
    name_prefix: Annotated[str | None, typer.Option()] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    table = Table("name", "latest", "aliases", "description")
    with _client(url, token) as c:
        for m in _run(lambda: list(c.list_models(name_prefix=name_prefix))):
            aliases = ", ".join(f"{k}→{v}" for k, v in m.aliases.items())
            table.add_row(m.name, str(m.latest_version), aliases, m.description[:60])
    console.print(table)


@models_app.command("get")
def models_get(name: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    with _client(url, token) as c:
        _print_json(_run(lambda: c.get_model(name)))


@models_app.command("delete")
def models_delete(name: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    with _client(url, token) as c:
        _run(lambda: c.delete_model(name))
    console.print(f"deleted model {name}")


# --- versions -------------------------------------------------------------------------------------


@versions_app.command("create")
def versions_create(
    name: str,
    description: Annotated[str, typer.Option()] = "",
    source: Annotated[str | None, typer.Option(help="s3://, gs://, https://, runs:/ ...")] = None,
    framework: Annotated[str | None, typer.Option()] = None,
    artifact: Annotated[Path | None, typer.Option(help="Upload this file as the artifact.")] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Create the next version (and upload its artifact when --artifact is given)."""
    with _client(url, token) as c:
        v = _run(lambda: c.create_version(name, description=description, source=source, framework=framework))
        if artifact is not None:
            v = _upload(c, name, v.version, artifact)
        _print_json(v)


def _upload(c: Any, name: str, version: int, path: Path) -> Any:
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Progress(*columns, console=err_console) as progress:
        task = progress.add_task(f"upload {path.name}", total=path.stat().st_size)
        return _run(
            lambda: c.upload_artifact(name, version, path, progress=lambda n: progress.advance(task, n))
        )


@versions_app.command("upload")
def versions_upload(
    name: str, version: int, path: Path, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None
) -> None:
    """Upload a version's artifact (sha256 computed here and checked by the registry)."""
    with _client(url, token) as c:
        _print_json(_upload(c, name, version, path))


@versions_app.command("download")
def versions_download(
    name: str, version: int, dest: Path, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None
) -> None:
    """Download a version's artifact to DEST, verifying its sha256."""
    with _client(url, token) as c:
        info = _run(lambda: c.get_version(name, version)).artifact
        columns = (
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
        )
        with Progress(*columns, console=err_console) as progress:
            task = progress.add_task(f"download {name}/{version}", total=info.size if info else None)
            got = _run(
                lambda: c.download_artifact(name, version, dest, progress=lambda n: progress.advance(task, n))
            )
    console.print(f"{dest}: {got.size} bytes, {got.digest}")


@versions_app.command("list")
def versions_list(name: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    table = Table("version", "status", "author", "aliases", "digest")
    with _client(url, token) as c:
        for v in _run(lambda: list(c.list_versions(name))):
            digest = v.artifact.digest[:19] if v.artifact else ""
            table.add_row(str(v.version), v.status, v.author, ", ".join(v.aliases), digest)
    console.print(table)


@versions_app.command("get")
def versions_get(name: str, version: int, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    with _client(url, token) as c:
        _print_json(_run(lambda: c.get_version(name, version)))


# --- aliases --------------------------------------------------------------------------------------


@aliases_app.command("set")
def aliases_set(
    name: str, alias: str, version: int, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None
) -> None:
    with _client(url, token) as c:
        _print_json(_run(lambda: c.set_alias(name, alias, version)))


@aliases_app.command("get")
def aliases_get(name: str, alias: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    with _client(url, token) as c:
        _print_json(_run(lambda: c.get_alias(name, alias)))


@aliases_app.command("list")
def aliases_list(name: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    with _client(url, token) as c:
        _print_json([a.model_dump(mode="json") for a in _run(lambda: c.list_aliases(name))])


@aliases_app.command("delete")
def aliases_delete(name: str, alias: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    with _client(url, token) as c:
        _run(lambda: c.delete_alias(name, alias))
    console.print(f"deleted alias {alias} of {name}")


# --- tokens ---------------------------------------------------------------------------------------


@tokens_app.command("create")
def tokens_create(
    name: str,
    scope: Annotated[list[str], typer.Option(help="read, write or admin; repeatable")],
    prefix: Annotated[
        list[str] | None, typer.Option(help="Limit to model names with this prefix; repeatable")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Create directly in this database (bootstrap, no server needed).", show_default=False
        ),
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """Create a token and print its secret (shown once; the registry stores only a hash)."""
    if database_url is not None:
        from modelplane.registry_client import schemas
        from modelplane.serving.registry import auth, migrate
        from modelplane.serving.registry.db import Database
        from modelplane.serving.registry.store.sql import SqlStore

        migrate.upgrade(database_url)
        db = Database(database_url, pool_size=1)
        try:
            secret = auth.new_token()
            data = schemas.TokenCreate(name=name, scopes=scope, name_prefixes=prefix or [])
            public = SqlStore(db).create_token(os.environ.get("USER", "cli"), data, auth.hash_token(secret))
        finally:
            db.dispose()
        _print_json({**public.model_dump(mode="json"), "token": secret})
        return
    with _client(url, token) as c:
        _print_json(_run(lambda: c.create_token(name, scope, prefix or [])))


@tokens_app.command("list")
def tokens_list(url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    with _client(url, token) as c:
        _print_json([t.model_dump(mode="json") for t in _run(c.list_tokens)])


@tokens_app.command("revoke")
def tokens_revoke(token_id: int, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    with _client(url, token) as c:
        _run(lambda: c.revoke_token(token_id))
    console.print(f"revoked token {token_id}")
