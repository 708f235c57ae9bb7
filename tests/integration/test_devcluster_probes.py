"""The node agent's probes against real servers: HTTP, TCP, gRPC health and exec."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator

import grpc
import pytest

from modelplane.devcluster.agent import probes

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def http_server() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readuntil(b"\r\n\r\n")).decode()
        path = request.split(" ", 2)[1]
        status = {"/ok": "200 OK", "/redirect": "302 Found"}.get(path, "500 Internal Server Error")
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port


async def test_http_get_probe_succeeds_on_2xx_3xx_and_fails_otherwise(http_server: int) -> None:
    container = {"ports": [{"name": "http", "containerPort": http_server}]}

    def spec(path: str, port: object = "http") -> dict[str, object]:
        return {"httpGet": {"path": path, "port": port}, "timeoutSeconds": 2}

    assert await probes.run_probe(spec("/ok"), container, HOST, {}, "/")
    assert await probes.run_probe(spec("/redirect", http_server), container, HOST, {}, "/")
    assert not await probes.run_probe(spec("/broken"), container, HOST, {}, "/")
    assert not await probes.run_probe(spec("/ok", _free_port()), container, HOST, {}, "/")


async def test_tcp_probe_needs_a_listener(http_server: int) -> None:
    assert await probes.run_probe({"tcpSocket": {"port": http_server}}, {}, HOST, {}, "/")
    assert not await probes.run_probe({"tcpSocket": {"port": _free_port()}}, {}, HOST, {}, "/")


@pytest.mark.parametrize(("serving", "expected"), [(True, True), (False, False)])
async def test_grpc_probe_reads_the_standard_health_service(serving: bool, expected: bool) -> None:
    status = b"\x08\x01" if serving else b"\x08\x02"  # SERVING / NOT_SERVING

    async def check(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return status

    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    try:
        ok = await probes.run_probe({"grpc": {"port": port}, "timeoutSeconds": 3}, {}, HOST, {}, "/")
    finally:
        await server.stop(None)
    assert ok is expected
    assert not await probes.run_probe(
        {"grpc": {"port": _free_port()}, "timeoutSeconds": 1}, {}, HOST, {}, "/"
    )


async def test_exec_probe_uses_the_exit_status_and_its_timeout() -> None:
    env = dict(os.environ)
    python = sys.executable

    def spec(code: str, timeout: int = 5) -> dict[str, object]:
        return {"exec": {"command": [python, "-c", code]}, "timeoutSeconds": timeout}

    assert await probes.run_probe(spec("pass"), {}, HOST, env, "/")
    assert not await probes.run_probe(spec("raise SystemExit(1)"), {}, HOST, env, "/")
    assert not await probes.run_probe(spec("import time; time.sleep(30)", timeout=1), {}, HOST, env, "/")
