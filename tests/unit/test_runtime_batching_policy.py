"""The batcher's adaptive policy: wait for more requests only while waiting is likely to fill the batch.

The decision (:func:`worth_waiting`) and the signals it reads (:class:`ArrivalTracker`) run on a
simulated clock; two tests on a real event loop show its two promises: a lone client never waits
the configured delay, and clients between two requests are waited for.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from modelplane.serving.runtime.batcher import PEAK_WINDOW_S, ArrivalTracker, Batcher, worth_waiting


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def decide(**changes: Any) -> bool:
    values: dict[str, Any] = {
        "queued": 1, "max_batch": 8, "in_flight": 1, "peak": 4, "rate": 1000.0, "left_s": 0.001,
    }  # fmt: skip
    values.update(changes)
    return worth_waiting(**values)


def test_a_batch_with_room_waits_for_clients_that_are_between_two_requests() -> None:
    assert decide()


@pytest.mark.parametrize(
    ("why", "changes"),
    [
        ("a lone client: everyone recently in flight is here already", {"peak": 1}),
        ("all the recent clients are queued or running", {"in_flight": 4, "peak": 4}),
        ("the batch is full", {"queued": 8}),
        ("at the recent rate nobody comes within the time left", {"rate": 500.0}),
        ("no arrivals measured yet", {"rate": 0.0}),
        ("the delay is spent", {"left_s": 0.0}),
        ("no delay configured", {"left_s": -0.001}),
    ],
)
def test_a_batch_goes_at_once(why: str, changes: dict[str, Any]) -> None:
    assert not decide(**changes), why


def test_the_peak_is_the_largest_in_flight_count_of_the_last_one_to_two_windows() -> None:
    clock = FakeClock()
    tracker = ArrivalTracker(clock)
    assert tracker.peak() == 0
    for in_flight in (1, 2, 3, 4, 2):
        tracker.arrived(in_flight)
    assert tracker.peak() == 4
    clock.now += PEAK_WINDOW_S * 1.5  # the next window: the burst is still remembered
    tracker.arrived(1)
    assert tracker.peak() == 4
    clock.now += PEAK_WINDOW_S  # a whole window with only one client: forgotten
    tracker.arrived(1)
    assert tracker.peak() == 1
    clock.now += PEAK_WINDOW_S * 3  # silence: nothing remembered at all
    assert tracker.peak() == 0


def test_the_rate_follows_the_gaps_between_arrivals_and_falls_in_silence() -> None:
    clock = FakeClock()
    tracker = ArrivalTracker(clock)
    assert tracker.rate() == 0.0  # nothing measured
    tracker.arrived(1)
    assert tracker.rate() == 0.0  # one arrival has no gap
    for _ in range(50):
        clock.now += 0.001
        tracker.arrived(1)
    assert tracker.rate() == pytest.approx(1000.0, rel=1e-6)
    clock.now += 0.1  # 100 ms without an arrival: the rate cannot be above 10/s
    assert tracker.rate() == pytest.approx(10.0)
    clock.now += 0.0  # arrivals at the same instant: an unbounded rate, not a division by zero
    burst = ArrivalTracker(FakeClock())
    burst.arrived(1)
    burst.arrived(2)
    assert math.isinf(burst.rate())


def test_after_a_burst_a_lone_client_is_waited_for_only_until_the_burst_is_forgotten() -> None:
    clock = FakeClock()
    tracker = ArrivalTracker(clock)
    for in_flight in range(1, 9):  # eight clients
        tracker.arrived(in_flight)
        clock.now += 0.0002
    clock.now += 0.0005

    def waits() -> bool:
        return worth_waiting(
            queued=1, max_batch=8, in_flight=1, peak=tracker.peak(), rate=tracker.rate(), left_s=0.005
        )

    assert waits()  # right after the burst, others are likely on their way
    clock.now += 0.05  # 50 ms of silence: at 20/s nobody comes within 5 ms
    assert not waits()
    clock.now += PEAK_WINDOW_S * 2
    tracker.arrived(1)
    clock.now += 0.0001
    tracker.arrived(1)
    assert not waits()  # fast again, but alone: the burst is forgotten


def double(inputs: Sequence[np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
    return [inputs[0] * 2]


async def test_a_lone_client_never_waits_the_queue_delay() -> None:
    # A 10 s delay: waiting it even once would blow the test's time limit.
    waits: list[float] = []
    sizes: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(
            double, pool, max_batch_size=8, max_delay_s=10.0, on_dequeue=waits.append, on_batch=sizes.append
        )
        batcher.start()
        for value in range(20):
            (out,) = await batcher.submit([np.full((1, 2), value, dtype=np.float32)], 1)
            np.testing.assert_array_equal(out, [[2 * value, 2 * value]])
        await batcher.stop()
    assert sizes == [1] * 20
    assert max(waits) < 1.0  # each went at once; the delay was 10 s


async def test_clients_between_two_requests_are_waited_for_to_fill_the_batch() -> None:
    # Four clients that each think for a different time between requests: their requests arrive
    # one by one, never together. Dispatching each at once would give batches of one; the policy
    # sees four clients recently in flight and waits for the rest (the delay is long: 0.5 s).
    sizes: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(double, pool, max_batch_size=4, max_delay_s=0.5, on_batch=sizes.append)
        batcher.start()

        async def client(think_s: float) -> None:
            for _ in range(6):
                await batcher.submit([np.ones((1, 2), dtype=np.float32)], 1)
                await asyncio.sleep(think_s)

        await asyncio.gather(*(client(0.002 * i) for i in range(4)))
        await batcher.stop()
    assert sum(sizes) == 24
    assert sizes[1:] == [4] * 5  # after the first round, every batch is full


async def test_the_full_policy_always_waits_the_delay_for_a_full_batch() -> None:
    # Triton's fixed policy, for who wants it: a lone request waits the whole delay (0.2 s here).
    waits: list[float] = []
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(
            double, pool, max_batch_size=8, max_delay_s=0.2, on_dequeue=waits.append, adaptive=False
        )
        batcher.start()
        await batcher.submit([np.ones((1, 2), dtype=np.float32)], 1)
        await batcher.stop()
    assert len(waits) == 1
    assert waits[0] >= 0.15


def test_the_batch_wait_parameter_is_checked() -> None:
    from modelplane.serving.runtime.config import ConfigError, parse_config
    from modelplane.testing.runtime import mlp_config

    assert parse_config(mlp_config("m"), "m").batch_wait == "adaptive"
    full = 'parameters { key: "batch_wait" value { string_value: "full" } }'
    assert parse_config(mlp_config("m", extra=full), "m").batch_wait == "full"
    with pytest.raises(ConfigError, match="batch_wait must be one of adaptive, full"):
        parse_config(mlp_config("m", extra=full.replace('"full"', '"sometimes"')), "m")
