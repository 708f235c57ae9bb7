"""``modelplane dev-cluster``: build, start, inspect and stop the local Kubernetes control plane."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from modelplane.devcluster import build, cluster, nodes

app = typer.Typer(
    name="dev-cluster",
    help="A real Kubernetes control plane here: etcd, API server, controllers, scheduler, GPU nodes.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar=cluster.STATE_ENV,
        help="Where the cluster keeps its data, certificates, kubeconfig, pids and logs "
        "[default: .modelplane/dev-cluster].",
        show_default=False,
    ),
]


def _builder(components: tuple[build.Component, ...]) -> None:
    """Build what is missing, with a live progress line (package count) per binary."""
    todo = build.missing(components)
    if not todo:
        return
    names = ", ".join(f"{b.name} {c.version}" for c, b in todo)
    console.print(f"[bold]Building from the Go module proxy (first time only):[/] {names}")
    console.print(f"cache: {build.cache_root()}")
    start = time.monotonic()
    with console.status("starting") as status:
        counter: dict[str, int] = {"packages": 0}
        current = {"binary": ""}
        # Without a terminal (CI logs) the live line is invisible: print a progress line now and then.
        last_line = {"at": time.monotonic()}

        def report(line: str) -> None:
            if line.startswith("building "):
                current["binary"] = line.removeprefix("building ")
                counter["packages"] = 0
                console.print(f"[cyan]{line}[/]")
            elif line.startswith("resolving modules"):
                console.print(line)
            else:
                counter["packages"] += 1
            elapsed = time.monotonic() - start
            progress = f"{current['binary']}: {counter['packages']} packages compiled ({elapsed:.0f}s)"
            status.update(f"{progress} {line[:70]}")
            if not console.is_terminal and time.monotonic() - last_line["at"] >= 30:
                last_line["at"] = time.monotonic()
                console.print(progress)

        built = build.build(components, report=report)
    for name, seconds in built:
        console.print(f"  built {name} in {seconds:.0f}s")
    console.print(f"[green]build finished in {time.monotonic() - start:.0f}s[/]")


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=1)


@app.command("build")
def build_cmd(
    all_: Annotated[bool, typer.Option("--all", help="Also build Helm and kwok.")] = False,
) -> None:
    """Build (once) and cache the binaries; later runs return at once."""
    components = build.all_components() if all_ else build.core_components()
    start = time.monotonic()
    try:
        _builder(components)
    except build.BuildError as exc:
        raise _fail(exc) from None
    for c in components:
        console.print(f"{c.key}: {build.bin_dir(c)}")
    console.print(f"binaries ready in {time.monotonic() - start:.1f}s")


@app.command()
def up(
    state_dir: StateDir = None,
    mix: Annotated[
        str, typer.Option("--nodes", help="Node mix: PRODUCT:GPUS*COUNT entries, e.g. 'h100:1*2,a100:4,cpu'.")
    ] = nodes.DEFAULT_MIX,
    gpu_taint: Annotated[
        bool, typer.Option("--gpu-taint", help="Taint GPU nodes nvidia.com/gpu:NoSchedule.")
    ] = False,
    port: Annotated[int, typer.Option("--port", help="API server port (default: a free one).")] = 0,
    kwok_nodes: Annotated[
        int, typer.Option("--kwok-nodes", help="Also run kwok with this many fake GPU nodes.")
    ] = 0,
    reset: Annotated[bool, typer.Option("--reset", help="Discard a stale state directory first.")] = False,
) -> None:
    """Start the cluster and wait until every node is Ready (builds the binaries first if needed)."""
    directory = cluster.state_dir(state_dir)
    try:
        nodes.parse_mix(mix)
        components = build.core_components() + ((build.kwok_component(),) if kwok_nodes else ())
        _builder(components)
        start = time.monotonic()
        state = cluster.up(
            directory,
            mix=mix,
            gpu_taint=gpu_taint,
            apiserver_port=port,
            kwok_nodes=kwok_nodes,
            reset=reset,
            report=lambda m: console.print(m),
        )
    except (build.BuildError, cluster.ClusterError, nodes.MixError) as exc:
        raise _fail(exc) from None
    console.print(f"[green]ready in {time.monotonic() - start:.1f}s[/]  server {state.server}")
    console.print(f"export KUBECONFIG={state.kubeconfig}")


@app.command()
def down(
    state_dir: StateDir = None,
    keep_data: Annotated[bool, typer.Option("--keep-data", help="Keep the state directory (logs).")] = False,
) -> None:
    """Stop every process the cluster started and remove its state directory."""
    directory = cluster.state_dir(state_dir)
    if not cluster.down(directory, keep=keep_data, report=lambda m: console.print(m)):
        console.print(f"no dev cluster in {directory}")
        return
    console.print("[green]dev cluster stopped[/]")


@app.command()
def status(
    state_dir: StateDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Show whether each component runs and which nodes are Ready (exit 1 when not running)."""
    directory = cluster.state_dir(state_dir)
    summary = cluster.status(directory)
    if as_json:
        console.print_json(json.dumps(summary))
    elif not summary.get("components"):
        console.print(f"no dev cluster in {directory}; start one with `modelplane dev-cluster up`")
    else:
        table = Table("component", "pid", "running")
        for name, info in summary["components"].items():
            table.add_row(name, str(info["pid"]), "yes" if info["running"] else "[red]no[/]")
        console.print(table)
        console.print(f"server: {summary['server']}\nkubeconfig: {summary['kubeconfig']}")
        for name, ready in summary.get("nodes", {}).items():
            console.print(f"node {name}: {'Ready' if ready else '[red]NotReady[/]'}")
    if not summary["running"]:
        raise typer.Exit(code=1)


@app.command()
def kubeconfig(state_dir: StateDir = None) -> None:
    """Print the admin kubeconfig's path (use: export KUBECONFIG=$(modelplane dev-cluster kubeconfig))."""
    directory = cluster.state_dir(state_dir)
    state = cluster.ClusterState.load(directory)
    if state is None or not state.kubeconfig.is_file():
        err.print(f"no dev cluster in {directory}; start one with `modelplane dev-cluster up`")
        raise typer.Exit(code=1)
    typer.echo(str(state.kubeconfig))
