"""``modelplane registry ...``: run the registry and work with models, versions, aliases and tokens."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from modelplane.cli.registry_target import DEFAULT_DATA_DIR, DEFAULT_URL

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
T = TypeVar("T")

#: The artifact formats the registry records (``schemas.ArtifactFormat``), by file suffix.
FORMAT_BY_SUFFIX = {".pt": "torchscript", ".pt2": "torch-export", ".pth": "state-dict"}
FORMATS = ("torchscript", "torch-export", "state-dict", "hf-causal-lm")
GENERATIVE_FORMAT = "hf-causal-lm"

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        "--registry-url",
        envvar="MODELPLANE_REGISTRY_URL",
        help="Registry base URL (default: the registry of the `modelplane up` running on --data-dir, "
        f"else {DEFAULT_URL}).",
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MODELPLANE_REGISTRY_TOKEN",
        help="API token (default: the local stack's admin token when its registry is used).",
        show_default=False,
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="MODELPLANE_DATA_DIR",
        help="Use the registry and token of the `modelplane up` running on this data directory "
        f"(default: {DEFAULT_DATA_DIR} when a stack runs there). --url wins.",
        file_okay=False,
        show_default=False,
    ),
]


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


class _Registry:
    """A client of the chosen registry; ``run`` turns every failure into one line naming its URL."""

    def __init__(self, url: str | None, token: str | None, data_dir: Path | None) -> None:
        import httpx

        from modelplane.cli.registry_target import TargetError, choose
        from modelplane.registry_client.client import RegistryClient

        try:
            self.target = choose(url, token, data_dir)
            self.client = RegistryClient(self.target.url, self.target.token)
        except TargetError as exc:
            raise _fail(str(exc)) from None
        except httpx.InvalidURL as exc:
            raise _fail(
                f"{self.target.url} is not a registry URL ({exc}): pass --url http://HOST:PORT"
            ) from None

    def __enter__(self) -> _Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def run(self, fn: Callable[[], T]) -> T:
        import httpx
        from pydantic import ValidationError

        from modelplane.cli import registry_target as rt
        from modelplane.registry_client.client import RegistryClientError

        try:
            return fn()
        except RegistryClientError as exc:
            if not rt.looks_like_problem(exc.problem) and not rt.answers_like_registry(self.target.url):
                raise _fail(rt.not_a_registry_message(self.target, f"HTTP {exc.status}")) from None
            if rt.is_unknown_route(exc.status, exc.problem):
                raise _fail(rt.unknown_route_message(self.target, exc.problem)) from None
            raise _fail(str(exc)) from None
        except httpx.HTTPError as exc:
            raise _fail(rt.unreachable_message(self.target, exc)) from None
        except (ValidationError, ValueError, KeyError, TypeError) as exc:
            # A 2xx answer that is not the registry's JSON; anything else is a bug to show in full.
            if rt.answers_like_registry(self.target.url):
                raise
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise _fail(rt.not_a_registry_message(self.target, f"with something else ({first})")) from None


def _connect(url: str | None, token: str | None, data_dir: Path | None) -> _Registry:
    return _Registry(url, token, data_dir)


def artifact_format(path: Path) -> str | None:
    """The format of an artifact on disk, or None when it is not one the registry names.

    A file by its suffix (.pt TorchScript, .pt2 torch.export, .pth state_dict); a directory whose
    ``config.json`` names an architecture ending in ``ForCausalLM`` is a Hugging Face causal LM.
    """
    if path.is_file():
        return FORMAT_BY_SUFFIX.get(path.suffix)
    config = path / "config.json"
    if not (path.is_dir() and config.is_file()):
        return None
    try:
        data = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    architectures = data.get("architectures") if isinstance(data, dict) else None
    if isinstance(architectures, list) and any(
        isinstance(a, str) and a.endswith("ForCausalLM") for a in architectures
    ):
        return GENERATIVE_FORMAT
    return None


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
    sqlite_synchronous: Annotated[
        str | None,
        typer.Option(
            help="SQLite only: 'full' (default: every commit fsynced, survives power loss) or 'normal' "
            "(fsync at checkpoints only: faster, the last commits can be lost on power loss; for "
            "throwaway data). Env: MODELPLANE_REGISTRY_SQLITE_SYNCHRONOUS.",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Run the registry (migrations run first; MODELPLANE_REGISTRY_BOOTSTRAP_TOKEN creates an admin token)."""
    import dataclasses

    from modelplane.serving.registry.config import Settings
    from modelplane.serving.registry.server import serve as run_server

    try:
        settings = Settings.from_env(database_url, artifact_root, sqlite_synchronous)
    except ValueError as exc:
        raise _fail(str(exc)) from None
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
    url: UrlOpt = None,
    token: TokenOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    tags = dict(t.split("=", 1) for t in tag or [] if "=" in t)
    with _connect(url, token, data_dir) as reg:
        _print_json(reg.run(lambda: reg.client.create_model(name, description, tags)))


@models_app.command("list")
def models_list(
    name_prefix: Annotated[str | None, typer.Option()] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    table = Table("name", "latest", "aliases", "description")
    with _connect(url, token, data_dir) as reg:
        for m in reg.run(lambda: list(reg.client.list_models(name_prefix=name_prefix))):
            aliases = ", ".join(f"{k}→{v}" for k, v in m.aliases.items())
            table.add_row(m.name, str(m.latest_version), aliases, m.description[:60])
    console.print(table)


@models_app.command("get")
def models_get(name: str, url: UrlOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None) -> None:
    with _connect(url, token, data_dir) as reg:
        _print_json(reg.run(lambda: reg.client.get_model(name)))


@models_app.command("delete")
def models_delete(name: str, url: UrlOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None) -> None:
    with _connect(url, token, data_dir) as reg:
        reg.run(lambda: reg.client.delete_model(name))
    console.print(f"deleted model {name}")


# --- versions -------------------------------------------------------------------------------------


@versions_app.command("create")
def versions_create(
    name: str,
    description: Annotated[str, typer.Option()] = "",
    source: Annotated[str | None, typer.Option(help="s3://, gs://, https://, runs:/ ...")] = None,
    framework: Annotated[str | None, typer.Option()] = None,
    artifact: Annotated[
        Path | None,
        typer.Option(
            help="Upload this file as the artifact (.pt TorchScript, .pt2 torch.export program, .pth), "
            "or this directory (a Hugging Face model folder: every file, names starting with '.' left out).",
            exists=True,
            show_default=False,
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            help="Hugging Face pipeline task, such as text-generation (default: text-generation for an "
            "hf-causal-lm directory).",
            show_default=False,
        ),
    ] = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help=f"The artifact's format: {', '.join(FORMATS)} (default: read from --artifact).",
            show_default=False,
        ),
    ] = None,
    signature: Annotated[
        str | None,
        typer.Option(
            metavar="FILE|JSON",
            help="The tensors the model takes and returns: a JSON or YAML file, or inline JSON "
            '{"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 4]}], "outputs": [...]} '
            "(-1: dynamic, first: the batch). Read from a .pt2 artifact when not given. "
            "The operator serves only versions with one.",
            show_default=False,
        ),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create the next version (and upload its artifact when --artifact is given).

    The version's signature comes from --signature, or from a .pt2 artifact (a torch.export program
    records its tensors); it cannot be changed later, and the operator serves only versions with one.
    """
    from modelplane.cli import signatures
    from modelplane.registry_client import manifest, validation

    if format is not None and format not in FORMATS:
        raise _fail(f"--format {format!r} is not one of {', '.join(FORMATS)} (no version was created)")
    if task is not None:
        try:
            validation.check_task(task)
        except ValueError as exc:
            raise _fail(f"--task {task!r}: {exc} (no version was created)") from None
    if artifact is not None and artifact.is_dir():
        try:
            manifest.directory_files(artifact)
        except manifest.ManifestError as exc:
            raise _fail(f"{exc} (no version was created)") from None
    fmt = format if format is not None else (artifact_format(artifact) if artifact is not None else None)
    if task is None and fmt == GENERATIVE_FORMAT:
        task = "text-generation"
    try:
        sig = signatures.parse_signature(signature) if signature is not None else None
        if sig is None and artifact is not None and artifact.is_file():
            sig = signatures.infer_signature(artifact)
        if sig is not None:
            signatures.check_servable(sig)
    except signatures.SignatureError as exc:
        hint = (
            ""
            if signature is not None
            else f"; or give it with --signature FILE|JSON, such as '{signatures.EXAMPLE}'"
        )
        raise _fail(f"{exc}{hint} (no version was created)") from None
    with _connect(url, token, data_dir) as reg:
        v = reg.run(
            lambda: reg.client.create_version(
                name,
                description=description,
                source=source,
                framework=framework,
                signature=sig,
                task=task,
                format=fmt,
            )
        )
        if artifact is not None:
            v = _upload(reg, name, v.version, artifact)
        _print_json(v)
    if fmt == GENERATIVE_FORMAT:
        return  # a generative model is served from its directory: no tensor signature to give
    if artifact is not None and artifact.is_file() and artifact.suffix == ".pth":
        _warn(
            f"{artifact.name} is a state_dict, which the runtime builds into a model only with a "
            "module_class configuration parameter that a registry version does not carry: to serve the "
            "model, save it with torch.export (.pt2) or as TorchScript (.pt, with --signature)"
        )
    elif sig is None:
        _warn(_unservable_warning(name, v.version, artifact))
    elif signature is None and not signatures.batched(sig):
        shapes = ", ".join(f"{t.name} {t.shape}" for t in sig.inputs + sig.outputs)
        _warn(
            f"not every tensor of {artifact} starts with a dynamic batch dimension ({shapes}), so "
            f"version {v.version} answers each request on its own, with exactly these shapes; to batch "
            'requests, export with dynamic_shapes marking the first dimension torch.export.Dim("batch")'
        )


def _warn(message: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _unservable_warning(name: str, version: int, artifact: Path | None) -> str:
    import shlex

    from modelplane.cli import signatures

    why = (
        "a TorchScript file does not record its tensors' names, datatypes and shapes"
        if artifact is not None and artifact.is_file() and artifact.suffix == ".pt"
        else "it was created without --signature"
    )
    again = f" --artifact {shlex.quote(str(artifact))}" if artifact is not None else ""
    return (
        f"{name} version {version} has no signature, so the operator will not serve it: {why}. "
        "A version's signature cannot be set after it is created; register a new version with one:\n"
        f"  modelplane registry versions create {name}{again} --signature '{signatures.EXAMPLE}'\n"
        "with your model's tensors (-1 marks a dynamic dimension, the batch first; --signature also "
        "takes a JSON or YAML file), or save the model with torch.export as a .pt2, whose signature "
        "is read from the file."
    )


_COLUMNS = (
    "[progress.description]{task.description}",
    BarColumn(),
    DownloadColumn(),
    TransferSpeedColumn(),
)


def _upload(reg: _Registry, name: str, version: int, path: Path) -> Any:
    if path.is_dir():
        return _upload_directory(reg, name, version, path)
    columns = _COLUMNS
    with Progress(*columns, console=err_console) as progress:
        task = progress.add_task(f"upload {path.name}", total=path.stat().st_size)
        return reg.run(
            lambda: reg.client.upload_artifact(
                name, version, path, progress=lambda n: progress.advance(task, n)
            )
        )


def _upload_directory(reg: _Registry, name: str, version: int, path: Path) -> Any:
    """Hash every file, then upload the ones the registry lacks (resuming) and commit."""
    from modelplane.registry_client import manifest

    try:
        found = manifest.directory_files(path)
    except manifest.ManifestError as exc:
        raise _fail(str(exc)) from None
    total = sum(full.stat().st_size for _, full in found)
    with Progress(*_COLUMNS, console=err_console) as progress:
        hashing = progress.add_task(f"hash {path.name} ({len(found)} files)", total=total)
        sending = progress.add_task(f"upload {path.name}", total=total)

        def on_file(file_path: str, size: int) -> None:
            progress.update(sending, description=f"upload {path.name}/{escape(file_path)}")

        def run() -> Any:
            return reg.client.upload_directory(
                name,
                version,
                path,
                progress=lambda n: progress.advance(sending, n),
                on_file=on_file,
                hash_progress=lambda n: progress.advance(hashing, n),
            )

        result = reg.run(run)
        progress.update(sending, description=f"upload {path.name} ({len(found)} files)")
        return result


@versions_app.command("upload")
def versions_upload(
    name: str,
    version: int,
    path: Annotated[Path, typer.Argument(exists=True)],
    url: UrlOpt = None,
    token: TokenOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Upload a version's artifact: a file, or a directory file by file (sha256 computed here and
    checked by the registry; an interrupted directory upload resumes where it stopped)."""
    with _connect(url, token, data_dir) as reg:
        _print_json(_upload(reg, name, version, path))


@versions_app.command("download")
def versions_download(
    name: str,
    version: int,
    dest: Path,
    url: UrlOpt = None,
    token: TokenOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Download a version's artifact to DEST, verifying its sha256 (a directory artifact: into the
    directory DEST, every file's sha256 and the manifest digest verified)."""
    with _connect(url, token, data_dir) as reg:
        info = reg.run(lambda: reg.client.get_version(name, version)).artifact
        if info is not None and info.kind == "directory":
            if dest.exists() and not dest.is_dir():
                raise _fail(f"{dest} is not a directory; {name}/{version} is a directory artifact")
            with Progress(*_COLUMNS, console=err_console) as progress:
                task = progress.add_task(f"download {name}/{version}", total=info.size)

                def on_file(file_path: str, size: int) -> None:
                    progress.update(task, description=f"download {name}/{version}: {escape(file_path)}")

                listing = reg.run(
                    lambda: reg.client.download_directory(
                        name, version, dest, progress=lambda n: progress.advance(task, n), on_file=on_file
                    )
                )
            console.print(f"{dest}: {len(listing.files)} files, {info.size} bytes, {listing.digest}")
            return
        columns = _COLUMNS
        with Progress(*columns, console=err_console) as progress:
            task = progress.add_task(f"download {name}/{version}", total=info.size if info else None)
            got = reg.run(
                lambda: reg.client.download_artifact(
                    name, version, dest, progress=lambda n: progress.advance(task, n)
                )
            )
    console.print(f"{dest}: {got.size} bytes, {got.digest}")


@versions_app.command("list")
def versions_list(name: str, url: UrlOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None) -> None:
    table = Table("version", "status", "author", "aliases", "digest")
    with _connect(url, token, data_dir) as reg:
        for v in reg.run(lambda: list(reg.client.list_versions(name))):
            digest = v.artifact.digest[:19] if v.artifact else ""
            table.add_row(str(v.version), v.status, v.author, ", ".join(v.aliases), digest)
    console.print(table)


@versions_app.command("get")
def versions_get(
    name: str, version: int, url: UrlOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None
) -> None:
    with _connect(url, token, data_dir) as reg:
        _print_json(reg.run(lambda: reg.client.get_version(name, version)))


# --- aliases --------------------------------------------------------------------------------------


@aliases_app.command("set")
def aliases_set(
    name: str,
    alias: str,
    version: int,
    url: UrlOpt = None,
    token: TokenOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    with _connect(url, token, data_dir) as reg:
        _print_json(reg.run(lambda: reg.client.set_alias(name, alias, version)))


@aliases_app.command("get")
def aliases_get(
    name: str, alias: str, url: UrlOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None
) -> None:
    with _connect(url, token, data_dir) as reg:
        _print_json(reg.run(lambda: reg.client.get_alias(name, alias)))


@aliases_app.command("list")
def aliases_list(name: str, url: UrlOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None) -> None:
    with _connect(url, token, data_dir) as reg:
        _print_json([a.model_dump(mode="json") for a in reg.run(lambda: reg.client.list_aliases(name))])


@aliases_app.command("delete")
def aliases_delete(
    name: str, alias: str, url: UrlOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None
) -> None:
    with _connect(url, token, data_dir) as reg:
        reg.run(lambda: reg.client.delete_alias(name, alias))
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
    url: UrlOpt = None,
    token: TokenOpt = None,
    data_dir: DataDirOpt = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Print only the secret, for scripts: TOKEN=$(modelplane registry tokens ...).",
        ),
    ] = False,
) -> None:
    """Create a token and print it with its secret (shown once; the registry stores only a hash)."""
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
        created = schemas.TokenCreated(**public.model_dump(), token=secret)
    else:
        with _connect(url, token, data_dir) as reg:
            created = reg.run(lambda: reg.client.create_token(name, scope, prefix or []))
    if quiet:
        typer.echo(created.token)
    else:
        _print_json(created)


@tokens_app.command("list")
def tokens_list(url: UrlOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None) -> None:
    with _connect(url, token, data_dir) as reg:
        _print_json([t.model_dump(mode="json") for t in reg.run(reg.client.list_tokens)])


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: int, url: UrlOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None
) -> None:
    with _connect(url, token, data_dir) as reg:
        reg.run(lambda: reg.client.revoke_token(token_id))
    console.print(f"revoked token {token_id}")
