"""Pod IP allocation from a loopback network: every pod its own address, never 127.0.0.1."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


class NetworkError(ValueError):
    """The pod network is unusable or exhausted."""


def check_network(network: str) -> ipaddress.IPv4Network:
    """Accept only a subnet of 127.0.0.0/8 that excludes 127.0.0.1 (the host's own address)."""
    try:
        net = ipaddress.IPv4Network(network)
    except ValueError as exc:
        raise NetworkError(f"bad pod network {network!r}: {exc}") from None
    if not net.subnet_of(LOOPBACK):
        raise NetworkError(f"pod network {network} must lie inside 127.0.0.0/8 so traffic stays on loopback")
    if ipaddress.IPv4Address("127.0.0.1") in net:
        raise NetworkError(f"pod network {network} contains 127.0.0.1; pick one such as 127.10.0.0/16")
    return net


def allocate(network: str, used: Iterable[str]) -> str:
    """The lowest free host address of ``network`` (skipping .0 and .255 ends, which confuse some tools)."""
    net = check_network(network)
    taken = set(used)
    for host in net.hosts():
        last = int(host) & 0xFF
        if last in (0, 255):
            continue
        text = str(host)
        if text not in taken:
            return text
    raise NetworkError(f"pod network {network} has no free address left ({len(taken)} in use)")


def contains(network: ipaddress.IPv4Network, ip: str) -> bool:
    try:
        return ipaddress.IPv4Address(ip) in network
    except ValueError:
        return False


POOL = ipaddress.IPv4Network("127.10.0.0/16")
SUBNET_PREFIX = 22


def candidate_networks(pool: ipaddress.IPv4Network = POOL, prefix: int = SUBNET_PREFIX) -> list[str]:
    """The per-cluster pod networks (1022 pods each) that clusters on one machine choose among."""
    return [str(n) for n in pool.subnets(new_prefix=prefix)]


def lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"modelplane-pod-networks-{os.getuid()}"


def claim(preferred: str | None = None) -> tuple[str, int]:
    """Claim a pod network no other dev cluster on this machine uses: ``(network, lock fd)``.

    The claim is an exclusive ``flock`` on a file per network. Whoever holds the returned file
    descriptor (the node agent inherits it) holds the claim; it ends when that process exits, so a
    crashed cluster never leaks its network. ``preferred`` (a restarted agent's network) is tried
    first.
    """
    directory = lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    candidates = candidate_networks()
    if preferred:
        candidates = [preferred, *[c for c in candidates if c != preferred]]
    for network in candidates:
        path = directory / (network.replace("/", "_") + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return network, fd
    raise NetworkError(
        f"all {len(candidates)} pod networks in {POOL} are claimed by running dev clusters; stop one "
        "(`modelplane dev-cluster down`)"
    )
