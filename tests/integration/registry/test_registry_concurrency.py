"""Concurrent writers: version numbers stay dense and unique, duplicates are 409s, never a 5xx."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from modelplane.testing.registry import ADMIN_TOKEN, RegistryProcess

WRITERS = 50


def _in_parallel(registry: RegistryProcess, send: object, count: int) -> list[httpx.Response]:
    """Run ``send(client, i)`` from ``count`` threads released together by a barrier."""
    barrier = threading.Barrier(count, timeout=60)
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    with httpx.Client(
        base_url=registry.url,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=120.0,
        limits=limits,
        trust_env=False,
    ) as client:

        def one(i: int) -> httpx.Response:
            barrier.wait()
            return send(client, i)  # type: ignore[operator,no-any-return]

        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(one, range(count)))


def test_50_concurrent_version_creations_are_numbered_1_to_50(registry: RegistryProcess) -> None:
    with registry.http() as http:
        http.post("/api/v1/models", json={"name": "contended"}).raise_for_status()

    responses = _in_parallel(
        registry,
        lambda c, i: c.post("/api/v1/models/contended/versions", json={"description": f"writer {i}"}),
        WRITERS,
    )
    assert [r.status_code for r in responses] == [201] * WRITERS, [
        r.text for r in responses if r.status_code != 201
    ]
    numbers = sorted(r.json()["version"] for r in responses)
    assert numbers == list(range(1, WRITERS + 1))
    by_writer = {r.json()["description"]: r.json()["version"] for r in responses}
    assert len(by_writer) == WRITERS

    with registry.http() as http:
        listed = http.get("/api/v1/models/contended/versions", params={"limit": 1000}).json()["items"]
        assert [v["version"] for v in listed] == list(range(1, WRITERS + 1))
        assert {v["description"]: v["version"] for v in listed} == by_writer
        assert http.get("/api/v1/models/contended").json()["latest_version"] == WRITERS


def test_concurrent_creates_of_one_name_give_one_201_and_409s(registry: RegistryProcess) -> None:
    responses = _in_parallel(registry, lambda c, i: c.post("/api/v1/models", json={"name": "raced"}), 20)
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * 19, [r.text for r in responses if r.status_code >= 500]
    assert all(r.json()["type"].endswith("/already-exists") for r in responses if r.status_code == 409)


def test_concurrent_alias_moves_and_reads(registry: RegistryProcess) -> None:
    with registry.http() as http:
        http.post("/api/v1/models", json={"name": "flipping"}).raise_for_status()
        for _ in range(5):
            http.post("/api/v1/models/flipping/versions", json={}).raise_for_status()
        http.put("/api/v1/models/flipping/aliases/live", json={"version": 1}).raise_for_status()

    def send(c: httpx.Client, i: int) -> httpx.Response:
        if i % 2:
            return c.put("/api/v1/models/flipping/aliases/live", json={"version": 1 + i % 5})
        return c.get("/api/v1/models/flipping/aliases/live/version")

    responses = _in_parallel(registry, send, 30)
    assert [r.status_code for r in responses] == [200] * 30, [
        r.text for r in responses if r.status_code != 200
    ]
    with registry.http() as http:
        history = http.get("/api/v1/models/flipping/aliases/live/history").json()
        final = http.get("/api/v1/models/flipping/aliases/live").json()["version"]
    # History is a chain: each move starts where the previous one ended, and ends at the alias's target.
    assert all(a["to_version"] == b["from_version"] for a, b in itertools.pairwise(history))
    assert history[-1]["to_version"] == final
