"""Batch assembly and splitting, and the batcher's isolation of a failing request."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from modelplane.serving.runtime.batcher import (
    Batcher,
    Pending,
    assemble,
    run_inline,
    shape_key,
    split,
    take_batch,
    whole_ticks,
)
from modelplane.serving.runtime.config import parse_config
from modelplane.serving.runtime.runner import ModelError, TorchRunner
from modelplane.testing.runtime import FailsOnNegative, TwoInputs, two_input_config


def pending(loop: asyncio.AbstractEventLoop, rows: int, width: int = 4, value: float = 0.0) -> Pending:
    arrays = [np.full((rows, width), value, dtype=np.float32)]
    return Pending(arrays, rows, loop.create_future(), 0.0, shape_key(arrays))


async def test_take_batch_groups_same_shapes_up_to_the_max() -> None:
    loop = asyncio.get_running_loop()
    a, b, c, d, e = (
        pending(loop, 2),
        pending(loop, 1, width=5),
        pending(loop, 3),
        pending(loop, 4),
        pending(loop, 1),
    )
    queue = deque([a, b, c, d, e])
    assert take_batch(queue, 6) == [a, c, e]  # d would overflow 6; b has another shape
    assert list(queue) == [b, d]
    assert take_batch(queue, 6) == [b]
    assert take_batch(queue, 6) == [d]
    assert take_batch(queue, 6) == []


async def test_take_batch_skips_requests_whose_caller_left() -> None:
    loop = asyncio.get_running_loop()
    a, b = pending(loop, 1), pending(loop, 1)
    a.future.cancel()
    queue = deque([a, b])
    assert take_batch(queue, 8) == [b]
    assert not queue


async def test_assemble_and_split_round_trip() -> None:
    loop = asyncio.get_running_loop()
    batch = [pending(loop, 1, value=1), pending(loop, 3, value=2), pending(loop, 2, value=3)]
    (joined,) = assemble(batch)
    assert joined.shape == (6, 4)
    parts = split([joined * 10], [1, 3, 2])
    assert [p[0].shape[0] for p in parts] == [1, 3, 2]
    assert [float(p[0][0, 0]) for p in parts] == [10.0, 20.0, 30.0]


def test_split_refuses_outputs_without_the_batch_dim() -> None:
    with pytest.raises(ModelError, match="batch dim"):
        split([np.zeros((5, 2))], [2, 2])
    with pytest.raises(ModelError, match="batch dim"):
        split([np.asarray(1.0, dtype=np.float32)], [1])  # a 0-d array: no batch dim


def double(inputs: Sequence[np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
    (x,) = inputs
    if (x < 0).any():
        raise ModelError("negative input")
    return [x * 2]


async def test_batcher_batches_concurrent_requests_and_isolates_a_failure() -> None:
    sizes: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(double, pool, max_batch_size=16, max_delay_s=0.05, on_batch=sizes.append)
        batcher.start()
        values = [1.0, 2.0, -1.0, 3.0, 4.0]
        results = await asyncio.gather(
            *(batcher.submit([np.full((1, 2), v, dtype=np.float32)], 1) for v in values),
            return_exceptions=True,
        )
        await batcher.stop()
    for value, result in zip(values, results, strict=True):
        if value < 0:
            assert isinstance(result, ModelError)
        else:
            assert not isinstance(result, BaseException)
            np.testing.assert_array_equal(result[0], [[value * 2, value * 2]])
    assert sizes[0] == 5  # one batched attempt, then each retried alone
    assert sum(sizes) == 5


@pytest.mark.parametrize(
    ("seconds", "wait"),
    [
        (0.0005, 0.0),
        (0.000999, 0.0),
        (0.001, 0.001),
        (0.0025, 0.002),
        (0.003, 0.003),
        (0.0, 0.0),
        (-0.2, 0.0),
    ],
)
def test_the_queue_delay_is_waited_in_whole_timer_ticks_rounded_down(seconds: float, wait: float) -> None:
    assert whole_ticks(seconds) == pytest.approx(wait, abs=1e-12)


@pytest.mark.parametrize("uptime_s", [256.123, 2048.123, 16384.123, 32768.123])
def test_a_500us_delay_waits_alike_whatever_the_host_uptime(uptime_s: float) -> None:
    # uvloop's timer rounds what it is given to whole milliseconds, and (t + 0.0005) - t is a hair
    # above or below 0.5 ms depending on the binade of t (the loop clock: the host's uptime). Handed
    # to the timer, a 500 us delay was no wait at 256 s of uptime and 1.1 ms at 2048 s.
    remaining = (uptime_s + 0.0005) - uptime_s
    assert whole_ticks(remaining) == 0.0


async def test_a_sub_millisecond_delay_still_batches_requests_that_arrive_together() -> None:
    sizes: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(double, pool, max_batch_size=8, max_delay_s=0.0005, on_batch=sizes.append)
        batcher.start()
        await asyncio.gather(*(batcher.submit([np.ones((1, 2), dtype=np.float32)], 1) for _ in range(4)))
        await batcher.stop()
    assert sizes == [4]


async def test_batcher_without_dynamic_batching_runs_requests_one_by_one() -> None:
    sizes: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(double, pool, max_batch_size=8, max_delay_s=None, on_batch=sizes.append)
        batcher.start()
        await asyncio.gather(*(batcher.submit([np.ones((2, 2), dtype=np.float32)], 2) for _ in range(4)))
        await batcher.stop()
    assert sizes == [2, 2, 2, 2]


async def test_stopping_finishes_queued_requests() -> None:
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(double, pool, max_batch_size=8, max_delay_s=0.2)
        batcher.start()
        task = asyncio.ensure_future(batcher.submit([np.ones((1, 2), dtype=np.float32)], 1))
        await asyncio.sleep(0.01)
        await batcher.stop()
        np.testing.assert_array_equal((await task)[0], [[2.0, 2.0]])


async def test_stopping_fails_requests_still_queued_after_the_timeout() -> None:
    release = threading.Event()

    def stuck(inputs: Sequence[np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
        release.wait(10)
        return double(inputs)

    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(stuck, pool, max_batch_size=0, max_delay_s=None)  # one at a time
        batcher.start()
        running = asyncio.ensure_future(batcher.submit([np.ones((1, 2), dtype=np.float32)], 1))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(batcher.submit([np.ones((1, 2), dtype=np.float32)], 1))
        await asyncio.sleep(0.01)
        await batcher.stop(timeout_s=0.05)
        with pytest.raises(ModelError, match="unloaded"):
            await queued
        with pytest.raises(ModelError, match="unloaded while this request ran"):
            await running  # answered, not left hanging
        release.set()


def test_runner_maps_tuple_outputs_in_config_order() -> None:
    spec = parse_config(two_input_config("two"), "two")
    runner = TorchRunner(TwoInputs(), spec, torch.device("cpu"))
    total, scaled = runner.run([np.ones((2, 3), dtype=np.float32), np.array([[2], [3]], dtype=np.int64)])
    np.testing.assert_array_equal(total, [[3.0], [3.0]])
    np.testing.assert_array_equal(scaled, [[2, 2, 2], [3, 3, 3]])
    runner.warm_up()


def test_runner_reports_model_exceptions_as_model_errors() -> None:
    spec = parse_config(
        'max_batch_size: 4 input [ { name: "i" data_type: TYPE_FP32 dims: [2] } ]'
        ' output [ { name: "o" data_type: TYPE_FP32 dims: [2] } ]',
        "m",
    )
    runner = TorchRunner(FailsOnNegative(), spec, torch.device("cpu"))
    with pytest.raises(ModelError, match="negative input"):
        runner.run([np.full((1, 2), -1.0, dtype=np.float32)])
    wrong_arity = TorchRunner(TwoInputs(), replace(spec, inputs=spec.inputs * 2), torch.device("cpu"))
    with pytest.raises(ModelError, match="returned 2 values"):
        wrong_arity.run([np.ones((1, 2), dtype=np.float32), np.ones((1, 2), dtype=np.float32)])


def test_only_fast_forwards_run_on_the_event_loop() -> None:
    assert not run_inline(None, 0.00025)  # not measured yet: thread
    assert run_inline(0.0001, 0.00025)
    assert not run_inline(0.001, 0.00025)
    assert not run_inline(0.0001, 0.0)  # inline_below_us = 0 turns it off


async def test_fast_model_runs_on_the_loop_once_measured_and_slow_one_never() -> None:
    threads: list[str] = []

    def record(inputs: Sequence[np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
        threads.append(threading.current_thread().name)
        return [inputs[0] + 1]

    with ThreadPoolExecutor(1, thread_name_prefix="worker") as pool:
        fast = Batcher(record, pool, max_batch_size=4, max_delay_s=0.0, inline_below_s=10.0)
        slow = Batcher(record, pool, max_batch_size=4, max_delay_s=0.0, inline_below_s=0.0)
        for batcher in (fast, slow):
            batcher.start()
            for _ in range(3):
                (out,) = await batcher.submit([np.zeros((1, 2), dtype=np.float32)], 1)
                np.testing.assert_array_equal(out, [[1.0, 1.0]])
            await batcher.stop()
    main = threading.current_thread().name
    assert threads[0].startswith("worker")  # not measured yet
    assert threads[1:3] == [main, main]
    assert all(name.startswith("worker") for name in threads[3:])
