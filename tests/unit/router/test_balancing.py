"""Routing decisions: version split, sticky routing, least outstanding, ejection and retry budget."""

from __future__ import annotations

import random
from collections import Counter

from modelplane.serving.router.balancing import (
    Backend,
    EjectionPolicy,
    Endpoint,
    RetryBudget,
    pick_backend,
    pick_endpoint,
    record_result,
)

SPLIT = [Backend("3", 80, "stable"), Backend("4", 20, "canary")]


def test_weighted_split_follows_the_percentages() -> None:
    rng = random.Random(7)
    counts = Counter(pick_backend(SPLIT, rng).version for _ in range(20_000))  # type: ignore[union-attr]
    assert abs(counts["4"] / 20_000 - 0.20) < 0.015


def test_zero_weight_versions_get_nothing_and_no_weights_means_no_route() -> None:
    rng = random.Random(1)
    only_stable = [Backend("3", 100), Backend("4", 0, "canary")]
    assert {pick_backend(only_stable, rng).version for _ in range(500)} == {"3"}  # type: ignore[union-attr]
    assert pick_backend([Backend("3", 0)], rng) is None


def test_sticky_key_always_lands_on_the_same_version_and_keys_spread() -> None:
    rng = random.Random(3)
    first = {key: pick_backend(SPLIT, rng, sticky_key=key) for key in (f"user-{i}" for i in range(2000))}
    again = {key: pick_backend(SPLIT, random.Random(99), sticky_key=key) for key in first}
    assert first == again
    canary_share = sum(1 for b in first.values() if b and b.role == "canary") / len(first)
    assert 0.15 < canary_share < 0.25


def test_two_choices_prefers_the_less_loaded_endpoint() -> None:
    busy = Endpoint("a", "http://a", None, outstanding=10)
    idle = Endpoint("b", "http://b", None, outstanding=0)
    rng = random.Random(0)
    assert {pick_endpoint([busy, idle], rng, now=0).key for _ in range(100)} == {"b"}  # type: ignore[union-attr]


def test_load_spreads_across_endpoints_under_two_choices() -> None:
    endpoints = [Endpoint(str(i), f"http://{i}", None) for i in range(8)]
    rng = random.Random(5)
    for _ in range(400):  # requests that never finish: outstanding only grows
        chosen = pick_endpoint(endpoints, rng, now=0)
        assert chosen is not None
        chosen.outstanding += 1
    loads = [e.outstanding for e in endpoints]
    assert max(loads) - min(loads) <= 3, loads


def test_excluded_and_ejected_endpoints_are_skipped_but_never_leave_no_choice() -> None:
    a = Endpoint("a", "http://a", None)
    b = Endpoint("b", "http://b", None, ejected_until=100.0)
    rng = random.Random(0)
    assert pick_endpoint([a, b], rng, now=10).key == "a"  # type: ignore[union-attr]
    assert pick_endpoint([a, b], rng, now=10, exclude=frozenset({"a"})).key == "b"  # type: ignore[union-attr]
    assert pick_endpoint([a], rng, now=10, exclude=frozenset({"a"})) is None


def test_consecutive_failures_eject_with_doubling_back_off() -> None:
    policy = EjectionPolicy(consecutive_failures=3, base_seconds=5, max_seconds=12)
    peers = [Endpoint(str(i), "", None) for i in range(4)]
    bad = peers[0]
    assert [record_result(bad, False, 0.0, peers, policy) for _ in range(3)] == [False, False, True]
    assert bad.ejected_until == 5.0
    for _ in range(3):
        record_result(bad, False, 6.0, peers, policy)
    assert bad.ejected_until == 6.0 + 10.0
    for _ in range(3):
        record_result(bad, False, 20.0, peers, policy)
    assert bad.ejected_until == 20.0 + 12.0, "capped at max_seconds"


def test_a_success_resets_the_failure_streak() -> None:
    policy = EjectionPolicy(consecutive_failures=3)
    peers = [Endpoint("a", "", None), Endpoint("b", "", None)]
    for ok in (False, False, True, False, False):
        assert record_result(peers[0], ok, 0.0, peers, policy) is False


def test_never_more_than_half_the_endpoints_ejected() -> None:
    policy = EjectionPolicy(consecutive_failures=1, max_ejected_fraction=0.5)
    peers = [Endpoint(str(i), "", None) for i in range(4)]
    ejected = [record_result(e, False, 0.0, peers, policy) for e in peers]
    assert ejected == [True, True, False, False]


def test_retry_budget_allows_a_share_of_traffic_plus_a_floor() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=2.0, floor_tokens=2.0)
    for _ in range(50):
        budget.deposit()  # 50 requests: 10 retry tokens
    allowed = sum(budget.try_withdraw(now=0.0) for _ in range(100))
    assert allowed == 10 + 2
    assert budget.try_withdraw(now=0.0) is False
    assert budget.try_withdraw(now=1.0) is True, "the floor refills with time"
