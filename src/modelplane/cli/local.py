"""Working with the local stack: ``deploy``, ``get``, ``describe``, ``infer`` and ``logs``.

They find the running ``modelplane up`` through its data directory (``--data-dir``, or
``MODELPLANE_DATA_DIR``, default ``./.modelplane``), so they work from any shell.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from modelplane.cli.up import DataDirOpt

console = Console()
err_console = Console(stderr=True)

DEFAULT_DATA_DIR = Path(".modelplane")


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


def _running(data_dir: Path) -> dict[str, Any]:
    from modelplane.local.layout import DataDir, StackNotRunningError

    try:
        return DataDir.at(data_dir).running_stack()
    except StackNotRunningError as exc:
        raise _fail(str(exc)) from None


def _status(data_dir: Path) -> dict[str, Any]:
    from modelplane.local.layout import DataDir, read_json

    _running(data_dir)
    return read_json(DataDir.at(data_dir).status_file)


def _find(status: dict[str, Any], name: str) -> dict[str, Any]:
    for deployment in status.get("deployments", []):
        if deployment["name"] == name:
            return dict(deployment)
    known = ", ".join(d["name"] for d in status.get("deployments", [])) or "none"
    raise _fail(f"no deployment named {name!r} (deployments: {known}); see `modelplane get`")


def deploy(
    file: Annotated[
        Path,
        typer.Option(
            "--file", "-f", help="ModelDeployment YAML file.", exists=True, dir_okay=False, readable=True
        ),
    ],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    kube: Annotated[
        bool, typer.Option("--kube", help="Apply to the current kubectl context instead of the local stack.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the deployment is ready.")
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for readiness.")
    ] = 300.0,
) -> None:
    """Validate a ModelDeployment file, then serve it on the local stack (or apply it with --kube).

    The file is checked with the same types and rules as the cluster's CRD; a bad file is reported
    with its line and field and nothing changes.
    """
    from modelplane.local.layout import DataDir, read_json
    from modelplane.local.specs import load_file

    found, errors = load_file(file)
    if errors:
        for error in errors:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise _fail("the file was not deployed: fix the problems above and run the command again", 2)
    if kube:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise _fail("kubectl is not on PATH: install it, or deploy to the local stack without --kube")
        result = subprocess.run([kubectl, "apply", "-f", str(file)], check=False)
        raise typer.Exit(code=result.returncode)
    data = DataDir.at(data_dir)
    state = read_json(data.state_file)
    folder = Path(state.get("deploymentsDir") or data.default_deployments)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / file.name
    if target.resolve() != file.resolve():
        from modelplane.local.specs import load_directory

        existing, _ = load_directory(folder)
        for deployment in found:
            other = existing.get(deployment.name)
            if other is not None and other.path.name != file.name:
                raise _fail(
                    f"deployment {deployment.name!r} is already defined in {other.path}: edit that file, "
                    "or delete it first"
                )
        tmp = folder / f".{file.name}.tmp"
        shutil.copyfile(file, tmp)
        os.replace(tmp, target)
    names = [d.name for d in found]
    console.print(f"deployed {', '.join(names)} ({target})")
    try:
        data.running_stack()
    except Exception:
        console.print("the local stack is not running: it serves this file on the next `modelplane up`")
        return
    if wait:
        _wait_ready(data_dir, names, timeout)


def _wait_ready(data_dir: Path, names: list[str], timeout: float) -> None:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + timeout
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        tasks = {name: bar.add_task(f"{name}: waiting for the supervisor", total=1) for name in names}
        pending = set(names)
        while pending:
            status = _status(data_dir)
            rows = {d["name"]: d for d in status.get("deployments", [])}
            for name in list(pending):
                row = rows.get(name)
                if row is None:
                    continue
                if row.get("problem"):
                    raise _fail(f"{name}: {row['problem']}")
                bar.update(tasks[name], description=f"{name}: {row['ready']} ready")
                if row["readyReplicas"] >= 1 or (row["replicas"] == 0 and row.get("version") is not None):
                    bar.update(tasks[name], completed=1)
                    pending.discard(name)
            errors = [e for e in status.get("errors", []) if any(n in e for n in pending)]
            if errors:
                raise _fail("; ".join(errors))
            if time.monotonic() > deadline:
                raise _fail(
                    f"not ready within {timeout:.0f}s: {', '.join(sorted(pending))}; "
                    "see `modelplane describe NAME` and `modelplane logs NAME`"
                )
            time.sleep(0.5)


def get(
    name: Annotated[
        str | None, typer.Argument(help="One deployment (default: all).", show_default=False)
    ] = None,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
) -> None:
    """List the local stack's deployments (the columns of `kubectl get md`)."""
    from modelplane.local.view import deployments_table

    if output not in ("table", "json"):
        raise _fail(f"unknown output {output!r}: use table or json", 2)
    status = _status(data_dir)
    deployments = status.get("deployments", [])
    if name is not None:
        deployments = [_find(status, name)]
    if output == "json":
        console.print_json(json.dumps(deployments))
        return
    console.print(deployments_table(deployments))
    for error in status.get("errors", []):
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)


def describe(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
) -> None:
    """Show one deployment: its model, replicas, autoscaling, processes and problems."""
    from modelplane.local.view import age

    deployment = _find(_status(data_dir), name)
    scaling = deployment["autoscaling"]
    lines = [
        f"Name:         {deployment['name']}",
        f"File:         {deployment['file']}",
        f"Model:        {deployment['model']}",
        f"Resolved:     {deployment.get('resolved') or '-'}",
        f"Ready:        {deployment['ready']}",
        f"GPUs:         {deployment['gpus']}",
        f"URL:          {deployment['url']}",
        f"Age:          {age(deployment.get('created'))}",
        f"Autoscaling:  {scaling['mode']}, {scaling['minReplicas']}..{scaling['maxReplicas']} replicas",
        f"Last scale:   {scaling.get('lastDecision') or '-'}",
        f"Problem:      {deployment.get('problem') or '-'}",
        "Processes:",
    ]
    for process in deployment["processes"]:
        lines.append(
            f"  #{process['slot']} pid {process['pid']} {process['state']} http {process['http']} "
            f"grpc {process['grpc']} log {process['log']}"
        )
    if not deployment["processes"]:
        lines.append("  (none)")
    console.print("\n".join(lines), highlight=False, markup=False)


def _infer_body(data: str, model: str, base: str, client: Any) -> dict[str, Any]:
    """A V2 request from --data: a full V2 body, or plain numbers for a one-input model."""
    text = Path(data[1:]).read_text() if data.startswith("@") else data
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _fail(
            f"--data is not JSON ({exc}): pass a V2 body or a nested list such as [[1.0, 2.0]]", 2
        ) from None
    if isinstance(value, dict) and "inputs" in value:
        return value
    if not isinstance(value, list):
        raise _fail('--data must be a V2 request ({"inputs": [...]}) or a nested list of numbers', 2)
    metadata = client.get(f"{base}/v2/models/{model}")
    if metadata.status_code != 200:
        raise _fail(f"cannot read model {model!r}'s metadata ({metadata.status_code}): {metadata.text}")
    inputs = metadata.json().get("inputs", [])
    if len(inputs) != 1:
        raise _fail(f"model {model!r} takes {len(inputs)} inputs: pass a full V2 body with --data", 2)
    shape: list[int] = []
    level: Any = value
    while isinstance(level, list):
        shape.append(len(level))
        level = level[0] if level else None
    flat: list[Any] = []

    def walk(item: Any) -> None:
        if isinstance(item, list):
            for x in item:
                walk(x)
        else:
            flat.append(item)

    walk(value)
    return {
        "inputs": [
            {"name": inputs[0]["name"], "datatype": inputs[0]["datatype"], "shape": shape, "data": flat}
        ]
    }


def infer(
    model: Annotated[str, typer.Argument(help="Model (deployment) name, for example demo.")],
    data: Annotated[
        str,
        typer.Option(
            "--data", "-d", help="A V2 request body, a nested list of numbers such as [[0.1, 3.0]], or @FILE."
        ),
    ],
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Router base URL (default: the local stack's).", show_default=False),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the answer.")
    ] = 120.0,
) -> None:
    """Send one inference request (V2 HTTP) through the router and print the outputs."""
    import httpx

    base = (url or f"http://127.0.0.1:{_running(data_dir)['httpPort']}").rstrip("/")
    try:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            body = _infer_body(data, model, base, client)
            response = client.post(f"{base}/v2/models/{model}/infer", json=body)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the router at {base}: {exc}; is `modelplane up` running?") from None
    if response.status_code != 200:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise _fail(f"{response.status_code}: {message}")
    console.print_json(response.text)


def logs(
    name: Annotated[
        str | None,
        typer.Argument(
            help="registry, modelplane (router and supervisor) or a deployment; default: list the logs."
        ),
    ] = None,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    lines: Annotated[int, typer.Option("--tail", "-n", min=0, help="Lines to show from the end.")] = 50,
    follow: Annotated[
        bool, typer.Option("--follow", "-F", help="Keep printing new lines (Ctrl-C stops).")
    ] = False,
) -> None:
    """Show the local stack's log files."""
    from modelplane.local.layout import DataDir

    folder = DataDir.at(data_dir).logs
    files = sorted(folder.glob("*.log")) if folder.is_dir() else []
    if not files:
        raise _fail(f"no logs under {folder}: start the stack with `modelplane up --data-dir {data_dir}`")
    if name is None:
        for path in files:
            console.print(f"{path.stem:32} {path}", highlight=False)
        return
    chosen = [p for p in files if p.stem == name or p.stem.startswith(f"runtime-{name}-")]
    if not chosen:
        known = ", ".join(p.stem for p in files)
        raise _fail(f"no log named {name!r}: choose one of {known}")
    for path in chosen:
        if len(chosen) > 1:
            console.print(f"==> {path} <==", highlight=False)
        text = path.read_text(errors="replace").splitlines()
        for line in text[-lines:] if lines else []:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    if follow:
        _follow(chosen)


def _follow(paths: list[Path]) -> None:
    offsets = {p: p.stat().st_size for p in paths}
    try:
        while True:
            for path in paths:
                size = path.stat().st_size
                if size > offsets[path]:
                    with path.open("rb") as handle:
                        handle.seek(offsets[path])
                        chunk = handle.read(size - offsets[path])
                    offsets[path] = size
                    console.print(chunk.decode(errors="replace"), end="", highlight=False, markup=False)
            time.sleep(0.5)
    except KeyboardInterrupt:
        return
