"""The CLI around the local stack, without a running stack: help, validation, errors that say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelplane.cli.main import app
from modelplane.local.view import age, row

runner = CliRunner()

GOOD = """\
apiVersion: modelplane.io/v1alpha1
kind: ModelDeployment
metadata:
  name: iris
spec:
  model:
    name: iris
    version: 1
"""


@pytest.mark.parametrize("command", ["up", "deploy", "get", "describe", "infer", "logs"])
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "--data-dir" in result.output


def test_deploy_rejects_a_bad_file_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("version: 1", "version: 0"))
    data = tmp_path / "data"
    result = runner.invoke(app, ["deploy", "-f", str(bad), "--data-dir", str(data)])
    assert result.exit_code == 2
    assert "bad.yaml:8: spec.model.version" in result.output
    assert not (data / "deployments").exists()


def test_deploy_without_a_running_stack_saves_the_file(tmp_path: Path) -> None:
    good = tmp_path / "iris.yaml"
    good.write_text(GOOD)
    data = tmp_path / "data"
    result = runner.invoke(app, ["deploy", "-f", str(good), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert (data / "deployments" / "iris.yaml").read_text() == GOOD
    assert "next `modelplane up`" in result.output


def test_deploy_kube_needs_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "iris.yaml"
    good.write_text(GOOD)
    monkeypatch.setenv("PATH", str(tmp_path))
    result = runner.invoke(app, ["deploy", "-f", str(good), "--kube"])
    assert result.exit_code == 1
    assert "kubectl is not on PATH" in result.output


@pytest.mark.parametrize("command", [["get"], ["describe", "x"], ["infer", "x", "--data", "[[1]]"]])
def test_commands_say_how_to_start_the_stack(tmp_path: Path, command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "start it with `modelplane up" in result.output


def test_logs_without_logs_says_what_to_do(tmp_path: Path) -> None:
    result = runner.invoke(app, ["logs", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no logs under" in result.output
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "registry.log").write_text("one\ntwo\nthree\n")
    shown = runner.invoke(app, ["logs", "registry", "-n", "2", "--data-dir", str(tmp_path)])
    assert shown.exit_code == 0
    assert shown.output.split() == ["two", "three"]
    unknown = runner.invoke(app, ["logs", "nope", "--data-dir", str(tmp_path)])
    assert unknown.exit_code == 1
    assert "choose one of registry" in unknown.output


def test_shell_completion_is_offered() -> None:
    result = runner.invoke(app, ["--help"])
    assert "--install-completion" in result.output


def test_get_columns_match_kubectl() -> None:
    deployment = {
        "name": "demo", "model": "demo", "version": 3, "ready": "1/2", "gpus": 2,
        "url": "http://127.0.0.1:8080/v2/models/demo", "created": "2020-01-01T00:00:00Z",
    }  # fmt: skip
    assert row(deployment)[:6] == ("demo", "demo", "3", "1/2", "2", "http://127.0.0.1:8080/v2/models/demo")
    assert age(None) == "<unknown>"
