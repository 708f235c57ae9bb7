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


def test_preparing_a_model_does_not_import_torch() -> None:
    """The init container of every serving pod runs prepare-model: torch would add seconds of CPU."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import modelplane.cli.main, modelplane.serving.runtime.prepare\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_runtime_shows_its_info_lines_even_after_an_import_set_up_logging() -> None:
    """`run` sets INFO for the process: a root handler added earlier (as `logging.warning()` at import
    time adds one, at WARNING) would make a plain `basicConfig` a no-op and hide the INFO lines."""
    import subprocess
    import sys

    code = (
        "import logging\n"
        "logging.warning('an import logged this')\n"
        "from pathlib import Path\n"
        "from modelplane.serving.runtime import server\n"
        "async def serve(options):\n"
        "    server.log.info('modelplane runtime: started')\n"
        "server.serve = serve\n"
        "server.run(server.RuntimeOptions(model_repository=Path('.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert " INFO modelplane.runtime: modelplane runtime: started" in result.stderr, result.stderr
