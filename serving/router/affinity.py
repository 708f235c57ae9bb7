"""Prefix affinity: requests that share a prompt prefix prefer the endpoint that already holds it.

A generative runtime keeps the KV cache of prompts it has seen (prefix caching): a request whose
prompt starts like an earlier one on the same pod skips recomputing that part. Spreading such
requests over pods loses that. With affinity on, the prefix (see
:func:`modelplane.serving.router.openai_api.prompt_prefix`) is hashed onto a consistent-hashing
ring of the version's endpoints, and the request goes to the first endpoint clockwise whose load is
within a bound: consistent hashing with bounded loads (CHWBL, Mirrokni, Thorup and Zadimoghaddam,
2016). An endpoint over ``(1 + epsilon)`` times the average load (this request included) is
skipped, so a hot prefix spills onto the next endpoints of its walk instead of piling onto one pod;
an endpoint leaving moves only the prefixes it owned. Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import math
import random
from bisect import bisect_left
from collections.abc import Collection, Sequence
from functools import lru_cache

from modelplane.serving.router.balancing import Endpoint, endpoint_load, pick_least_loaded, usable

VIRTUAL_NODES = 100  # points per endpoint on the ring: even shares within a few percent
DEFAULT_EPSILON = 0.25  # a load bound of 125% of the average, as HAProxy's hash-balance-factor 125


def ring_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@lru_cache(maxsize=1024)  # endpoint sets change rarely; building the ring is the costly part
def ring(keys: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """The ring of ``keys``: sorted points, and for each point the index of its key in ``keys``."""
    points = sorted(
        (ring_hash(f"{key}#{i}"), index) for index, key in enumerate(keys) for i in range(VIRTUAL_NODES)
    )
    return [point for point, _ in points], [index for _, index in points]


def bounded_choice(
    prefix: str,
    keys: Sequence[str],
    loads: Sequence[float],
    skip: Collection[int] = (),
    epsilon: float = DEFAULT_EPSILON,
) -> int | None:
    """The index (into ``keys``) of the endpoint a prefix goes to: the first endpoint on the ring's
    walk from the prefix's hash that is not in ``skip`` and whose load, with this request, stays
    within ``ceil((1 + epsilon) * (total load + 1) / endpoints)``; the least loaded of the walk when
    none does (fractional load estimates can exceed every bound). None when all are skipped."""
    count = len(keys)
    if count == 0:
        return None
    capacity = math.ceil((1 + epsilon) * (sum(loads) + 1) / count)
    points, owners = ring(tuple(keys))
    start = bisect_left(points, ring_hash(prefix))
    seen: set[int] = set()
    fallback: int | None = None
    total = len(points)
    for step in range(total):
        owner = owners[(start + step) % total]
        if owner in seen:
            continue
        seen.add(owner)
        if owner not in skip:
            if loads[owner] + 1 <= capacity:
                return owner
            if fallback is None or loads[owner] < loads[fallback]:
                fallback = owner
        if len(seen) == count:
            break
    return fallback


def choose_endpoint(
    endpoints: Sequence[Endpoint],
    rng: random.Random,
    now: float,
    exclude: Collection[str] = (),
    prefix: str | None = None,
    epsilon: float = DEFAULT_EPSILON,
) -> Endpoint | None:
    """Where a generative request goes: by prefix affinity (bounded by load) when ``prefix`` is
    given, else (or with one candidate) the least-loaded endpoint. Ejected and excluded endpoints
    are skipped (ejected ones are used when nothing else is left), as for V2."""
    candidates = usable(endpoints, now, exclude)
    if prefix is None or len(candidates) <= 1:
        return pick_least_loaded(candidates, rng, now)
    allowed = {e.key for e in candidates}
    skip = {i for i, e in enumerate(endpoints) if e.key not in allowed}
    loads = [endpoint_load(e, now) for e in endpoints]
    index = bounded_choice(prefix, [e.key for e in endpoints], loads, skip, epsilon)
    return endpoints[index] if index is not None else pick_least_loaded(candidates, rng, now)
