"""Pod IP allocation from a loopback network: every pod its own address, never 127.0.0.1."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

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
