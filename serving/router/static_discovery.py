"""Static discovery: routes from a YAML file, reloaded when the file changes.

A broken edit never takes routes away: the error is logged and the last good routes stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import yaml

from modelplane.serving.router.discovery import ApplyRoutes
from modelplane.serving.router.routes import ModelRoute, RoutesError, parse_static_routes

log = logging.getLogger("modelplane.router")


def load_routes(path: Path) -> dict[str, ModelRoute]:
    """Parse the routes file; raises RoutesError naming the file and the problem."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RoutesError(f"{path}: cannot read the routes file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RoutesError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return parse_static_routes(document)
    except RoutesError as exc:
        raise RoutesError(f"{path}: {exc}") from exc


async def watch_routes(
    path: Path, apply: Callable[[dict[str, ModelRoute]], None], interval_s: float = 1.0
) -> None:
    """Apply the file's routes now and again whenever its modification time or size changes."""
    last: tuple[int, int] | None = None
    while True:
        try:
            stat = await asyncio.to_thread(path.stat)
            signature = (stat.st_mtime_ns, stat.st_size)
        except OSError as exc:
            log.error("routes file %s is unreadable: %s (keeping the last good routes)", path, exc)
            signature = None
        if signature is not None and signature != last:
            last = signature
            try:
                apply(load_routes(path))
                log.info("loaded routes from %s", path)
            except RoutesError as exc:
                log.error("%s (keeping the last good routes)", exc)
        await asyncio.sleep(interval_s)


class StaticDiscovery:
    """Routes from a file: applied at start (a bad file fails the start), then followed."""

    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self, apply: ApplyRoutes) -> None:
        apply(load_routes(self.path))  # fail fast on a bad file at start-up
        self._task = asyncio.create_task(watch_routes(self.path, apply, self.interval_s))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def activate(self, model: str) -> None:
        log.info("model %s has no ready endpoint; static discovery cannot start it", model)
