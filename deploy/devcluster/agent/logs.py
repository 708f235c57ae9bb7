"""``kubectl logs`` for dev-cluster pods: the small part of the kubelet API the API server proxies to.

The API server reaches a node's kubelet at its InternalIP (127.0.0.1 for every dev node) and the
port in ``status.daemonEndpoints``; the agent answers ``/containerLogs/<ns>/<pod>/<container>``
from the per-pod log files, honouring ``tailLines``, ``limitBytes`` and ``follow``. It serves TLS
with the API server's own certificate (valid for 127.0.0.1) and listens on loopback only.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

FOLLOW_POLL = 0.2


def tail(data: bytes, lines: int | None) -> bytes:
    """The last ``lines`` lines of ``data`` (all of it when None)."""
    if lines is None:
        return data
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


def _int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"not an integer: {value!r}") from None


def _locate(pods_dir: Path, namespace: str, pod: str, container: str) -> Path | None:
    if "/" in container or ".." in container:
        return None
    matches = sorted(
        pods_dir.glob(f"{namespace}_{pod}_*/logs/{container}.log"), key=lambda p: p.stat().st_mtime
    )
    return matches[-1] if matches else None


def _read_from(path: Path, offset: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read()


def make_app(pods_dir: Path, alive: Callable[[str, str], bool]) -> web.Application:
    """``alive(namespace, pod)``: whether a followed log may still grow."""

    async def container_logs(request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        pod = request.match_info["pod"]
        container = request.match_info["container"]
        path = await asyncio.to_thread(_locate, pods_dir, namespace, pod, container)
        if path is None:
            raise web.HTTPNotFound(text=f"no log for container {container!r} of pod {namespace}/{pod}")
        everything = await asyncio.to_thread(_read_from, path, 0)
        data = tail(everything, _int(request.query.get("tailLines")))
        limit = _int(request.query.get("limitBytes"))
        if limit is not None:
            data = data[:limit]
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(data)
        if request.query.get("follow") in ("true", "1"):
            offset = len(everything)
            while alive(namespace, pod):
                await asyncio.sleep(FOLLOW_POLL)
                more = await asyncio.to_thread(_read_from, path, offset)
                if more:
                    await response.write(more)
                    offset += len(more)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", container_logs)
    return app


async def serve(app: web.Application, cert: Path, key: Path) -> tuple[web.AppRunner, int]:
    """Start serving on a free loopback port; returns the runner (to clean up) and the port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    return runner, int(sockets[0].getsockname()[1])
