"""A byte relay in Python on uvloop: the floor of any data plane written in Python.

``python benchmarks/_relay.py PORT BACKEND_HOST BACKEND_PORT`` listens on 127.0.0.1:PORT and, for
each client connection, opens one connection to the backend and copies bytes both ways. It parses
nothing (no HTTP, no routing, no metrics), so its CPU per request is what Python, uvloop and the
kernel cost for the two reads and two writes a proxied request needs. ``router_overhead.py
--relay`` runs it beside the router and nginx: the router's CPU above the relay's is the work of
its own request path.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import cast

import uvloop


def _no_delay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Backend(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        _no_delay(transport)

    def data_received(self, data: bytes) -> None:
        self.client.send(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, backend: tuple[str, int]) -> None:
        self.backend_address = backend
        self.transport: asyncio.Transport | None = None
        self.backend: _Backend | None = None
        self.early: list[bytes] = []  # what arrived before the backend connection was up

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        _no_delay(transport)
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, backend = await loop.create_connection(lambda: _Backend(self), *self.backend_address)
        except OSError:
            self.close()
            return
        self.backend = backend
        assert backend.transport is not None
        for data in self.early:
            backend.transport.write(data)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.backend is None or self.backend.transport is None:
            self.early.append(data)
        else:
            self.backend.transport.write(data)

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.close()


async def serve(port: int, backend: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(backend), "127.0.0.1", port, backlog=1024)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), (sys.argv[2], int(sys.argv[3]))))
