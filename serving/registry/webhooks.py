"""Webhooks: destination checks (no SSRF), HMAC-SHA256 signatures, back-off, and the delivery loop.

Deliveries are rows written in the same transaction as the event (an outbox), so an event that
committed is delivered even if the registry restarts in between. A receiver verifies
``X-Modelplane-Signature: sha256=<hex>`` = HMAC-SHA256(secret, ``<timestamp>.<body>``) with the
timestamp from ``X-Modelplane-Timestamp`` (``verify_signature`` below does exactly that).

Destinations are checked when the webhook is created and again before every delivery (a DNS name can
change its answer): link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10,
fd00:ec2::254), unspecified, multicast and reserved addresses are always refused; loopback only
when the operator allows it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx

from modelplane.serving.registry import errors
from modelplane.serving.registry.store.base import DueDelivery, RegistryStore

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Modelplane-Signature"
TIMESTAMP_HEADER = "X-Modelplane-Timestamp"
EVENT_HEADER = "X-Modelplane-Event"
DELIVERY_HEADER = "X-Modelplane-Delivery"
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Iterable[str]]


def _resolve(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


def address_refusal(addr: Address, allow_loopback: bool) -> str | None:
    """Why a webhook may not target ``addr``, or None when it may."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return address_refusal(addr.ipv4_mapped, allow_loopback)
    if addr in METADATA_ADDRESSES:
        return "is a cloud metadata address"
    if addr.is_link_local:
        return "is link-local"
    if addr.is_unspecified:
        return "is unspecified"
    if addr.is_multicast:
        return "is multicast"
    if addr.is_loopback:
        return (
            None
            if allow_loopback
            else "is loopback (start the registry with webhook loopback allowed to use it)"
        )
    if addr.is_reserved:
        return "is reserved"
    return None


def validate_url(url: str, allow_loopback: bool, resolver: Resolver = _resolve) -> str:
    """Return ``url`` if a webhook may deliver to it; raise ``InvalidInputError`` saying why not."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise errors.InvalidInputError("webhook URL must use http or https")
    if parts.username or parts.password:
        raise errors.InvalidInputError("webhook URL must not carry credentials; use the signing secret")
    host = parts.hostname
    if not host:
        raise errors.InvalidInputError("webhook URL must name a host")
    try:
        _ = parts.port
    except ValueError as exc:
        raise errors.InvalidInputError("webhook URL has an invalid port") from exc
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = _resolve_addresses(host, resolver)
    for addr in addresses:
        why = address_refusal(addr, allow_loopback)
        if why is not None:
            raise errors.InvalidInputError(f"webhook host {host!r} resolves to {addr}, which {why}")
    return url


def _resolve_addresses(host: str, resolver: Resolver) -> list[Address]:
    try:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host)]
    except (OSError, UnicodeError, ValueError) as exc:
        raise errors.InvalidInputError(f"webhook host {host!r} does not resolve: {exc}") from exc
    if not addresses:
        raise errors.InvalidInputError(f"webhook host {host!r} does not resolve")
    return addresses


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Delay before retry number ``attempt`` (1-based): base, 2·base, 4·base, ... capped at max."""
    return float(min(max_s, base_s * (2 ** max(0, attempt - 1))))


@dataclass(frozen=True)
class WebhookSettings:
    allow_loopback: bool = False
    max_attempts: int = 5
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0
    timeout_s: float = 5.0
    poll_interval_s: float = 1.0


class Dispatcher:
    """A background thread that sends due deliveries; ``wake()`` makes it look now."""

    def __init__(self, store: RegistryStore, settings: WebhookSettings) -> None:
        self.store = store
        self.settings = settings
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhook-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        with httpx.Client(timeout=self.settings.timeout_s, follow_redirects=False, trust_env=False) as client:
            while not self._stop.is_set():
                try:
                    self.run_once(client)
                except Exception:
                    log.exception("webhook dispatch failed; retrying later")
                self._wake.wait(self.settings.poll_interval_s)
                self._wake.clear()

    def run_once(self, client: httpx.Client) -> int:
        lease_s = 50 * (self.settings.timeout_s + 1)  # longer than sending the whole batch can take
        due = self.store.due_deliveries(dt.datetime.now(dt.UTC), limit=50, lease_s=lease_s)
        for delivery in due:
            if self._stop.is_set():
                break
            self._deliver(client, delivery)
        return len(due)

    def _deliver(self, client: httpx.Client, delivery: DueDelivery) -> None:
        body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(time.time()))
        status: int | None = None
        error = ""
        try:
            validate_url(delivery.url, self.settings.allow_loopback)
            response = client.post(
                delivery.url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: sign(delivery.secret, timestamp, body),
                    TIMESTAMP_HEADER: timestamp,
                    EVENT_HEADER: delivery.event,
                    DELIVERY_HEADER: str(delivery.id),
                },
            )
            status = response.status_code
            ok = 200 <= status < 300
            if not ok:
                error = f"receiver answered HTTP {status}"
        except errors.InvalidInputError as exc:
            ok, error = False, f"destination refused: {exc.detail}"
        except httpx.HTTPError as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        attempt = delivery.attempts + 1
        next_at = None
        if not ok and attempt < self.settings.max_attempts:
            delay = backoff_s(attempt, self.settings.backoff_base_s, self.settings.backoff_max_s)
            next_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
        self.store.record_delivery(delivery.id, ok, status, error, next_at)
