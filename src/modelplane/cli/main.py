"""Entry point of the ``modelplane`` command: one typer app that the subcommand modules attach to."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from modelplane import __version__
from modelplane.cli import dev_cluster
from modelplane.cli import runtime as runtime_command
from modelplane.cli.registry import app as registry_app

app = typer.Typer(
    name="modelplane",
    help="Machine-learning models as a service on Kubernetes.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
console = Console()
app.add_typer(registry_app, name="registry")
err_console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"modelplane {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Machine-learning models as a service on Kubernetes.

    Register a model version in the registry, apply a ModelDeployment, and Modelplane serves it over
    the KServe / Open Inference Protocol V2 (HTTP and gRPC), routes traffic and scales with load.
    """


@app.command()
def up() -> None:
    """Run the whole platform on this machine (registry, router, a served demo model)."""
    err_console.print(
        "[bold yellow]`modelplane up` (the one-command local stack) is not built yet.[/] "
        "Its parts run on their own today:\n"
        "  modelplane registry serve ...   the model registry (REST API, /docs)\n"
        "  modelplane runtime ...          a V2 (HTTP + gRPC) torch runtime over a model repository\n"
        "  modelplane router ...           the V2 router (static routes file, or Kubernetes discovery)\n"
        "  modelplane dev-cluster up       a local Kubernetes control plane with GPU test nodes\n"
        "  modelplane operator ...         the ModelDeployment operator\n"
        "Run `make test` for the test suite, and `modelplane COMMAND --help` for each part."
    )
    raise typer.Exit(code=2)


from modelplane.cli import crds, operator_command, router  # noqa: E402  (subcommands attach to `app`)

app.add_typer(crds.app, name="crds")
app.command(name="router")(router.router)
app.command(name="operator")(operator_command.operator)
app.add_typer(dev_cluster.app, name="dev-cluster")
app.command()(runtime_command.runtime)
app.command(name="prepare-model")(runtime_command.prepare_model)


def main() -> None:
    """Console-script entry point."""
    app()
