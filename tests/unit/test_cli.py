"""The ``modelplane`` command: help and version, through the installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

import modelplane
from modelplane.cli.main import app

runner = CliRunner()


def _console_script() -> str:
    script = Path(sys.executable).parent / "modelplane"
    return str(script) if script.exists() else (shutil.which("modelplane") or "modelplane")


def test_version_flag_prints_the_package_version() -> None:
    result = subprocess.run([_console_script(), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"modelplane {modelplane.__version__}"


def test_help_describes_the_product_and_lists_commands() -> None:
    result = subprocess.run([_console_script(), "--help"], capture_output=True, text=True, check=True)
    assert "Machine-learning models as a service on Kubernetes" in result.stdout
    assert "up" in result.stdout
    assert "--version" in result.stdout


def test_no_arguments_shows_help_instead_of_doing_something() -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output


def test_unknown_command_fails_with_a_usage_error() -> None:
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def _command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _command_paths(sub, (*path, name))


def test_no_help_shows_a_type_for_a_flag() -> None:
    """A flag takes no value: `--standalone <bool>`, `--help <bool>` (typer 0.29's rich help) read as
    if it took one. Every command and group, the flags typer adds (--help, --install-completion) too."""
    paths = list(_command_paths(typer.main.get_command(app)))
    assert {(), ("operator",), ("registry",), ("registry", "models", "list"), ("dev-cluster", "up")} <= set(
        paths
    )
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
        assert result.exit_code == 0, (path, result.output)
        assert "--help" in result.output, path
        assert "<bool>" not in result.output, (path, result.output)
    operator = runner.invoke(app, ["operator", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}).output
    assert "--standalone" in operator
    assert "--no-registry-records" in operator
    assert "<int>" in operator  # an option that takes a value still shows its type
