"""Container probes (httpGet, tcpSocket, grpc, exec) and the kubelet's threshold bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class ProbeTracker:
    """Success/failure thresholds of one probe, as the kubelet counts them.

    ``result`` starts as ``initial`` (readiness: not ready; liveness: healthy) and flips only after
    ``successThreshold`` consecutive successes or ``failureThreshold`` consecutive failures.
    """

    spec: dict[str, Any]
    initial: bool
    result: bool = False
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    started_at: float = 0.0
    ever_succeeded: bool = False
    _seeded: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if not self._seeded:
            self.result = self.initial
            self._seeded = True

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds") or 10)

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds") or 1)

    def start(self, now: float) -> None:
        self.started_at = now
        self.next_at = now + float(self.spec.get("initialDelaySeconds") or 0)
        self.successes = self.failures = 0
        self.result = self.initial

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, ok: bool, now: float) -> bool:
        """Count one probe outcome; return whether ``result`` changed."""
        self.next_at = now + self.period
        before = self.result
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= int(self.spec.get("successThreshold") or 1):
                self.result = True
                self.ever_succeeded = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= int(self.spec.get("failureThreshold") or 3):
                self.result = False
        return before != self.result


def resolve_port(port: Any, container: dict[str, Any]) -> int:
    """A probe port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for item in container.get("ports") or []:
        if item.get("name") == port:
            return int(item["containerPort"])
    raise ValueError(f"probe names port {port!r}, which the container does not declare")


def _grpc_request(service: str) -> bytes:
    data = service.encode()
    if not data:
        return b""
    length = len(data)
    varint = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        if length:
            varint.append(byte | 0x80)
        else:
            varint.append(byte)
            break
    return b"\x0a" + bytes(varint) + data


async def _grpc(host: str, port: int, service: str, limit: float) -> bool:
    """grpc.health.v1.Health/Check without generated stubs: status field 1 == SERVING (1)."""
    import grpc

    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        method = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            reply = await method(_grpc_request(service), timeout=limit)
        except grpc.aio.AioRpcError:
            return False
        return bytes(reply) == b"\x08\x01"


async def run_probe(
    spec: dict[str, Any], container: dict[str, Any], pod_ip: str, env: dict[str, str], cwd: str
) -> bool:
    """Run one probe against the container; True on success."""
    timeout = float(spec.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in spec:
            get = spec["httpGet"]
            port = resolve_port(get.get("port"), container)
            scheme = str(get.get("scheme") or "HTTP").lower()
            host = get.get("host") or pod_ip
            path = get.get("path") or "/"
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
            async with httpx.AsyncClient(verify=False, timeout=timeout) as client:  # noqa: S501 - kubelet skips TLS verification too
                response = await client.get(f"{scheme}://{host}:{port}{path}", headers=headers)
            return 200 <= response.status_code < 400
        if "tcpSocket" in spec:
            sock = spec["tcpSocket"]
            port = resolve_port(sock.get("port"), container)
            host = sock.get("host") or pod_ip
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        if "grpc" in spec:
            g = spec["grpc"]
            return await asyncio.wait_for(
                _grpc(pod_ip, int(g["port"]), g.get("service") or "", timeout), timeout
            )
        if "exec" in spec:
            argv = list(spec["exec"].get("command") or [])
            if not argv:
                return False
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=cwd,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                return await asyncio.wait_for(proc.wait(), timeout) == 0
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                await proc.wait()
                return False
    except (OSError, TimeoutError, httpx.HTTPError, ValueError):
        return False
    return False
