"""The ``modelplane`` command: help and version, through the installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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
