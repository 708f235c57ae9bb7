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


from modelplane.cli import crds, operator_command, router  # noqa: E402  (subcommands attach to `app`)
from modelplane.cli import local as local_command  # noqa: E402
from modelplane.cli import up as up_command  # noqa: E402

app.add_typer(crds.app, name="crds")
app.command(name="router")(router.router)
app.command(name="operator")(operator_command.operator)
app.add_typer(dev_cluster.app, name="dev-cluster")
app.command()(runtime_command.runtime)
app.command(name="prepare-model")(runtime_command.prepare_model)
app.command(name="up")(up_command.up)
app.command(name="deploy")(local_command.deploy)
app.command(name="get")(local_command.get)
app.command(name="describe")(local_command.describe)
app.command(name="infer")(local_command.infer)
app.command(name="logs")(local_command.logs)


def main() -> None:
    """Console-script entry point."""
    app()
