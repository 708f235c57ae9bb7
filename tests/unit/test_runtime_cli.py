"""``modelplane runtime``: Triton's flag names, and a clear refusal of a missing repository."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from modelplane.cli.main import app

runner = CliRunner()


def test_help_lists_tritons_flag_names() -> None:
    result = runner.invoke(app, ["runtime", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    for flag in (
        "--model-repository",
        "--host",
        "--http-port",
        "--grpc-port",
        "--metrics-port",
        "--max-body-bytes",
    ):
        assert flag in result.output


def test_missing_model_repository_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["runtime", "--model-repository", str(tmp_path / "nope")],
        env={"COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output
