"""Scale-from-zero buffering: requests wait, are released together, or are refused clearly."""

from __future__ import annotations

import asyncio

import pytest

from modelplane.serving.router.activation import ActivationQueue, ActivationTimeoutError, QueueFullError


async def test_waiters_are_released_when_endpoints_appear_and_activation_is_asked_once() -> None:
    calls: list[str] = []

    async def activate(model: str) -> None:
        calls.append(model)

    queue = ActivationQueue(activate, max_waiting=10, timeout_s=5)
    waiters = [asyncio.create_task(queue.wait("iris")) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert queue.waiting("iris") == 5
    assert calls == ["iris"]
    queue.endpoints_ready("iris")
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=1)
    assert queue.waiting("iris") == 0
    await queue.wait("iris")  # ready now: no wait, no new activation
    assert calls == ["iris"]


async def test_full_queue_refuses_at_once_and_others_keep_waiting() -> None:
    async def activate(model: str) -> None:
        return None

    queue = ActivationQueue(activate, max_waiting=2, timeout_s=5)
    waiters = [asyncio.create_task(queue.wait("iris")) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(QueueFullError, match="2 requests already wait"):
        await queue.wait("iris")
    queue.endpoints_ready("iris")
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=1)


async def test_timeout_refuses_and_the_next_request_asks_for_activation_again() -> None:
    calls: list[str] = []

    async def activate(model: str) -> None:
        calls.append(model)

    queue = ActivationQueue(activate, max_waiting=5, timeout_s=0.05)
    with pytest.raises(ActivationTimeoutError, match="did not become ready"):
        await queue.wait("iris")
    assert queue.waiting("iris") == 0
    with pytest.raises(ActivationTimeoutError):
        await queue.wait("iris")
    assert calls == ["iris", "iris"]


async def test_models_wait_independently_and_scaling_back_to_zero_rearms_the_wait() -> None:
    async def activate(model: str) -> None:
        return None

    queue = ActivationQueue(activate, max_waiting=5, timeout_s=5)
    a = asyncio.create_task(queue.wait("a"))
    b = asyncio.create_task(queue.wait("b"))
    await asyncio.sleep(0.02)
    queue.endpoints_ready("a")
    await asyncio.wait_for(a, timeout=1)
    assert not b.done()
    queue.endpoints_ready("b")
    await asyncio.wait_for(b, timeout=1)
    queue.endpoints_gone("a")
    again = asyncio.create_task(queue.wait("a"))
    await asyncio.sleep(0.02)
    assert not again.done()
    queue.endpoints_ready("a")
    await asyncio.wait_for(again, timeout=1)
