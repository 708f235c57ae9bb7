"""``modelplane crds``: generate (or check) the CRD YAML from the API types."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="CustomResourceDefinitions generated from the API types.", no_args_is_help=True)
console = Console()


@app.command()
def generate(
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Folder to write the CRD files into.")
    ] = Path("crds"),
    chart_dir: Annotated[
        Path,
        typer.Option("--chart-dir", help="The Helm chart's crds/ folder, which ships the same files."),
    ] = Path("charts/modelplane/crds"),
    reference: Annotated[
        Path,
        typer.Option(
            "--reference", help="Where to write the generated ModelDeployment reference (Markdown)."
        ),
    ] = Path("docs/reference/modeldeployment.md"),
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 and show a diff if the files are stale.")
    ] = False,
) -> None:
    """Write the ModelDeployment CRD (into crds/ and the chart) and its reference page, from the API types."""
    from modelplane.api.crd import render
    from modelplane.api.reference import render_reference

    rendered = render()
    outputs = {folder / name: text for folder in (output_dir, chart_dir) for name, text in rendered.items()}
    outputs[reference] = render_reference()
    stale = False
    for path, text in outputs.items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            console.print(f"[green]up to date[/] {path}")
            continue
        if check:
            stale = True
            diff = difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True), str(path), "generated"
            )
            console.print(f"[red]stale[/] {path}:", highlight=False)
            console.out("".join(diff), highlight=False)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        console.print(f"[bold]wrote[/] {path}")
    if stale:
        console.print("Run `modelplane crds generate` and commit the result.")
        raise typer.Exit(code=1)
