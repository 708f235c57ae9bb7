"""How deployments are shown: the columns of `kubectl get md` (MODEL, VERSION, READY, GPUS, URL, AGE)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

COLUMNS = ("NAME", "MODEL", "VERSION", "READY", "GPUS", "URL", "AGE")


def age(created: str | None, now: datetime | None = None) -> str:
    """Kubernetes-style age: 45s, 12m, 3h, 2d."""
    if not created:
        return "<unknown>"
    try:
        then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def row(deployment: dict[str, Any], now: datetime | None = None) -> tuple[str, ...]:
    version = deployment.get("version")
    return (
        str(deployment["name"]),
        str(deployment["model"]),
        "" if version is None else str(version),
        str(deployment["ready"]),
        str(deployment["gpus"]),
        str(deployment["url"]),
        age(deployment.get("created"), now),
    )


def deployments_table(deployments: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for column in COLUMNS:
        table.add_column(column, no_wrap=column in ("NAME", "URL"))
    for deployment in deployments:
        table.add_row(*row(deployment))
    return table


def status_view(status: dict[str, Any]) -> RenderableType:
    """The live view of `modelplane up`: the table, each deployment's problem, and bad files."""
    deployments = status.get("deployments", [])
    parts: list[RenderableType] = [deployments_table(deployments)]
    for deployment in deployments:
        if deployment.get("problem"):
            parts.append(Text(f"{deployment['name']}: {deployment['problem']}", style="yellow"))
    for error in status.get("errors", []):
        parts.append(Text(f"error: {error}", style="red"))
    return Group(*parts)


def plain_lines(status: dict[str, Any]) -> list[str]:
    """The same information as text lines, for logs and terminals without live updates."""
    lines = [
        f"{d['name']}: {d['ready']} ready, model {d['model']} version {d.get('version') or '-'}"
        + (f" ({d['problem']})" if d.get("problem") else "")
        for d in status.get("deployments", [])
    ]
    lines.extend(f"error: {e}" for e in status.get("errors", []))
    return lines
