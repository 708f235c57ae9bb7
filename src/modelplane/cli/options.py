"""Options several server commands share, defined once so that their flags and help agree."""

from __future__ import annotations

from typing import Annotated

import typer

DrainTimeout = Annotated[
    float,
    typer.Option("--drain-timeout", min=0.0, help="Seconds to let in-flight requests finish on SIGTERM"),
]
DrainDelay = Annotated[
    float,
    typer.Option(
        "--drain-delay",
        min=0.0,
        help="Seconds to keep serving, reported not ready, after SIGTERM before refusing requests",
    ),
]
