"""Choosing where a request goes: the version by weight, then an endpoint by least outstanding requests.

Pure decisions over in-memory state, so the hot path does no I/O and every rule is unit-tested:
- versions are split by weight (a canary's percent), or pinned by a sticky key's hash;
- among a version's ready endpoints the balancer takes the less loaded of two random picks
  ("power of two choices"), which avoids both herding and a global scan;
- endpoints that fail repeatedly are ejected for a back-off that doubles per ejection, never more
  than half of a version's endpoints at once (a broken canary must not take stable down with it).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit


class EndpointLoad:
    """What a generative runtime's ``/metrics`` said at one moment (read by the load scraper)."""

    __slots__ = ("at", "kv_cache", "outstanding", "running", "waiting")

    def __init__(self, waiting: float, running: float, kv_cache: float, at: float, outstanding: int) -> None:
        self.waiting = waiting  # vllm:num_requests_waiting: requests queued for a batch slot
        self.running = running  # vllm:num_requests_running: requests in the running batch
        self.kv_cache = kv_cache  # vllm:kv_cache_usage_perc, 0..1
        self.at = at  # time.monotonic() of the reading
        self.outstanding = outstanding  # the router's own requests in flight to it at that moment


@dataclass
class Endpoint:
    """One ready backend (a runtime pod) and what the router knows about it."""

    key: str  # stable identity, e.g. the pod IP:port
    http: str  # base URL for V2 HTTP, e.g. http://10.0.0.5:8000
    grpc: str | None  # host:port for V2 gRPC
    outstanding: int = 0
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    load: EndpointLoad | None = None  # generative runtimes: the last reading of their engine's load

    @property
    def authority(self) -> str:
        """``host:port`` of ``http``: what the connection pool dials."""
        return authority_of(self.http)

    def available(self, now: float) -> bool:
        return now >= self.ejected_until


@lru_cache(maxsize=4096)  # asked on every request; compiled classes cannot use cached_property
def authority_of(url: str) -> str:
    """``host:port`` of a plain-HTTP base URL (port 80 when absent); ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"{url!r} is not a plain http://HOST:PORT base URL")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or 80}"


@dataclass(frozen=True)
class Backend:
    """A version of a model and its share of traffic."""

    version: str
    weight: int  # relative; for stable/canary these are the percents
    role: str = "stable"


def pick_backend(
    backends: Sequence[Backend], rng: random.Random, sticky_key: str | None = None
) -> Backend | None:
    """Choose a version by weight; the same sticky key always lands on the same version."""
    weighted = [b for b in backends if b.weight > 0]
    if len(weighted) <= 1:  # no split (the common case), so nothing to draw
        return weighted[0] if weighted else None
    total = sum(b.weight for b in weighted)
    if sticky_key is not None:
        digest = hashlib.blake2b(sticky_key.encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") % total
    else:
        point = rng.randrange(total)
    for backend in weighted:
        if point < backend.weight:
            return backend
        point -= backend.weight
    return weighted[-1]


def pick_endpoint(
    endpoints: Sequence[Endpoint], rng: random.Random, now: float, exclude: Collection[str] = ()
) -> Endpoint | None:
    """Power of two choices over available endpoints (falling back to ejected ones if none is)."""
    if len(endpoints) == 1:  # the common case of one replica: no choice to make
        only = endpoints[0]
        return None if only.key in exclude else only
    candidates = [e for e in endpoints if e.key not in exclude and e.available(now)]
    if not candidates:
        candidates = [e for e in endpoints if e.key not in exclude]
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    a, b = rng.sample(candidates, 2)
    return a if a.outstanding <= b.outstanding else b


LOAD_STALE_S = 3.0  # a reading older than this (three missed scrapes) is not used


def load_score(
    endpoint: Endpoint, now: float, stale_after_s: float = LOAD_STALE_S
) -> tuple[float, float, float]:
    """How loaded a generative endpoint is, lower is better, compared in order: requests waiting
    for a batch slot, then requests at the engine (waiting plus running), then KV-cache use.

    The engine's reading is up to a scrape interval old; the router's own in-flight count is exact.
    So the requests the router sent it since the reading (or that finished since) are added to
    what the reading said: ``delta = outstanding now - outstanding at the reading``. An engine that
    had a queue queues each new request (``waiting + delta``); one that had none is taken to run
    them. Its requests at the engine are never fewer than the router's own in flight. Without a
    fresh reading (none yet, the scrape failed, or older than ``stale_after_s``) the score is the
    router's in-flight count alone: least outstanding requests.
    """
    outstanding = endpoint.outstanding
    load = endpoint.load
    if load is None or now - load.at > stale_after_s:
        return (0.0, float(outstanding), 0.0)
    delta = outstanding - load.outstanding
    waiting = max(0.0, load.waiting + delta) if load.waiting > 0 else 0.0
    active = max(float(outstanding), load.waiting + load.running + delta)
    return (waiting, active, load.kv_cache)


def endpoint_load(endpoint: Endpoint, now: float, stale_after_s: float = LOAD_STALE_S) -> float:
    """Requests at the endpoint's engine, estimated as :func:`load_score` does (its second figure)."""
    return load_score(endpoint, now, stale_after_s)[1]


def usable(endpoints: Sequence[Endpoint], now: float, exclude: Collection[str]) -> list[Endpoint]:
    """Endpoints not excluded and not ejected (the ejected ones too when nothing else is left)."""
    candidates = [e for e in endpoints if e.key not in exclude and e.available(now)]
    return candidates or [e for e in endpoints if e.key not in exclude]


def pick_least_loaded(
    endpoints: Sequence[Endpoint], rng: random.Random, now: float, exclude: Collection[str] = ()
) -> Endpoint | None:
    """The endpoint with the lowest :func:`load_score` (a random one among equals, so idle
    endpoints share the work instead of the first taking it all); a full scan: generative routes
    have few, slow endpoints, and every one of them is worth comparing."""
    best: list[Endpoint] = []
    best_score = (0.0, 0.0, 0.0)
    for endpoint in usable(endpoints, now, exclude):
        score = load_score(endpoint, now)
        if not best or score < best_score:
            best, best_score = [endpoint], score
        elif score == best_score:
            best.append(endpoint)
    if not best:
        return None
    return best[0] if len(best) == 1 else rng.choice(best)


@dataclass(frozen=True)
class EjectionPolicy:
    """Passive outlier detection settings."""

    consecutive_failures: int = 5
    base_seconds: float = 5.0
    max_seconds: float = 120.0
    max_ejected_fraction: float = 0.5


def record_result(
    endpoint: Endpoint, ok: bool, now: float, peers: Sequence[Endpoint], policy: EjectionPolicy
) -> bool:
    """Update an endpoint after a response; returns True when this result ejected it."""
    if ok:
        endpoint.consecutive_failures = 0
        if endpoint.ejections and endpoint.available(now):
            endpoint.ejections -= 1  # healthy again: the next ejection backs off less
        return False
    endpoint.consecutive_failures += 1
    if endpoint.consecutive_failures < policy.consecutive_failures or not endpoint.available(now):
        return False
    ejected = sum(1 for e in peers if not e.available(now))
    if (ejected + 1) > policy.max_ejected_fraction * len(peers):
        return False
    endpoint.ejections += 1
    endpoint.consecutive_failures = 0
    endpoint.ejected_until = now + min(
        policy.max_seconds, policy.base_seconds * 2 ** (endpoint.ejections - 1)
    )
    return True


@dataclass
class RetryBudget:
    """Retries allowed as a share of recent requests (Finagle's budget), plus a small floor.

    Each request deposits ``ratio`` tokens; each retry withdraws one. The floor lets a quiet model
    still retry ``min_per_second`` times a second. This bounds retry storms when a backend fails.
    """

    ratio: float = 0.2
    min_per_second: float = 10.0
    cap: float = 100.0
    balance: float = 0.0
    floor_tokens: float = field(default=10.0)
    last_refill: float = 0.0

    def deposit(self) -> None:
        self.balance = min(self.cap, self.balance + self.ratio)

    def try_withdraw(self, now: float) -> bool:
        elapsed = max(0.0, now - self.last_refill)
        self.last_refill = now
        self.floor_tokens = min(self.min_per_second, self.floor_tokens + elapsed * self.min_per_second)
        if self.balance >= 1.0 - 1e-9:  # 5 deposits of 0.2 make a whole token despite rounding
            self.balance = max(0.0, self.balance - 1.0)
            return True
        if self.floor_tokens >= 1.0:
            self.floor_tokens -= 1.0
            return True
        return False
