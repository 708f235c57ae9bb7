"""Entry point of the ``modelplane`` command: one typer app that the subcommand modules attach to."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup, TyperOption
from typer.models import DefaultPlaceholder

from modelplane import __version__
from modelplane.cli import dev_cluster
from modelplane.cli import llm_runtime as llm_runtime_command
from modelplane.cli import runtime as runtime_command
from modelplane.cli.registry import app as registry_app


def _untyped_flags(params: list[Any]) -> list[Any]:
    """Flags (``--standalone``, ``--help``) take no value, so their help shows no type.

    typer 0.29's rich help prints every option's type, flags included (``--help <bool>``); its
    plain help and typer 0.28's rich help leave flags out. An empty metavar is what the type column
    shows instead (``typer.Option(metavar=...)``), for the flags typer adds itself too.
    """
    for param in params:
        if isinstance(param, TyperOption) and (param.is_flag or param.count) and param.metavar is None:
            param.metavar = ""
    return params


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


def _with_untyped_flags(typer_app: typer.Typer) -> None:
    """Every command and group of ``typer_app``, down the tree, built with the classes above (where
    no class was chosen), so that no ``--help`` shows a type for a flag."""
    for command in typer_app.registered_commands:
        if command.cls in (None, TyperCommand):  # typer's default (`app.command()` fills it in)
            command.cls = _Command
    for group in typer_app.registered_groups:
        sub_app = group.typer_instance
        assert sub_app is not None
        # Typed as a class, but a placeholder until add_typer() or Typer() chooses one.
        chosen: list[object] = [group.cls, sub_app.info.cls]
        if all(isinstance(cls, DefaultPlaceholder) for cls in chosen):
            group.cls = _Group
        _with_untyped_flags(sub_app)


app = typer.Typer(
    name="modelplane",
    cls=_Group,
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
app.command(name="llm-runtime")(llm_runtime_command.llm_runtime)
app.command(name="up")(up_command.up)
app.command(name="deploy")(local_command.deploy)
app.command(name="get")(local_command.get)
app.command(name="describe")(local_command.describe)
app.command(name="infer")(local_command.infer)
app.command(name="logs")(local_command.logs)
_with_untyped_flags(app)


def main() -> None:
    """Console-script entry point."""
    app()
