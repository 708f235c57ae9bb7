"""The Coalescer: one reconcile per ModelDeployment at a time, bursts of triggers folded together.

The run function is a fake whose progress the test controls with asyncio Events, and
``asyncio.sleep`` is replaced by one that records the delay and returns at once: nothing here
waits on the wall clock.
"""

from __future__ import annotations

import asyncio

import pytest

from modelplane.kube import KubeError
from modelplane.operator.handlers import Coalescer
from modelplane.operator.reconcile import Outcome

Key = tuple[str, str]
REAL_SLEEP = asyncio.sleep  # kept before any test replaces asyncio.sleep


class FakeRun:
    """Counts runs per key; a key in ``held`` blocks until the test releases it."""

    def __init__(self) -> None:
        self.runs: list[Key] = []
        self.held: dict[Key, asyncio.Event] = {}
        self.started: dict[Key, asyncio.Event] = {}
        self.failures: list[KubeError] = []
        self.done = asyncio.Event()

    def hold(self, key: Key) -> asyncio.Event:
        self.started[key] = asyncio.Event()
        self.held[key] = asyncio.Event()
        return self.held[key]

    async def __call__(self, namespace: str, name: str) -> Outcome:
        key = (namespace, name)
        self.runs.append(key)
        if key in self.started:
            self.started[key].set()
        if key in self.held:
            await self.held.pop(key).wait()
        if self.failures:
            raise self.failures.pop(0)
        self.done.set()
        return Outcome()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays slept, in order; each sleep returns on the next turn of the event loop."""
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        await REAL_SLEEP(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return delays


async def settle(turns: int = 20) -> None:
    """Let every ready task run a few steps (a bounded number of loop turns, not a duration)."""
    for _ in range(turns):
        await REAL_SLEEP(0)


async def test_a_single_trigger_runs_once() -> None:
    run = FakeRun()

    await Coalescer(run).reconcile("ns", "a")

    assert run.runs == [("ns", "a")]


async def test_a_trigger_during_a_run_is_never_lost() -> None:
    run = FakeRun()
    coalescer = Coalescer(run)
    release = run.hold(("ns", "a"))
    first = asyncio.create_task(coalescer.reconcile("ns", "a"))
    await run.started[("ns", "a")].wait()

    second = asyncio.create_task(coalescer.reconcile("ns", "a"))
    await settle()
    assert len(run.runs) == 1  # one at a time: the second waits for the first
    release.set()
    await asyncio.gather(first, second)

    assert len(run.runs) == 2  # a run started after the trigger arrived


async def test_triggers_during_a_run_fold_into_exactly_one_more_run() -> None:
    run = FakeRun()
    coalescer = Coalescer(run)
    release = run.hold(("ns", "a"))
    first = asyncio.create_task(coalescer.reconcile("ns", "a"))
    await run.started[("ns", "a")].wait()

    more = [asyncio.create_task(coalescer.reconcile("ns", "a")) for _ in range(3)]
    await settle()
    release.set()
    outcomes = await asyncio.gather(first, *more)

    assert len(run.runs) == 2
    assert outcomes[1] is outcomes[2] is outcomes[3]  # the three share the one run after the first
    assert outcomes[0] is not outcomes[1]


async def test_a_failed_run_serves_nobody_and_the_next_trigger_runs_again() -> None:
    run = FakeRun()
    run.failures = [KubeError(503, "unavailable")]
    coalescer = Coalescer(run)
    release = run.hold(("ns", "a"))
    first = asyncio.create_task(coalescer.reconcile("ns", "a"))
    await run.started[("ns", "a")].wait()
    second = asyncio.create_task(coalescer.reconcile("ns", "a"))
    await settle()
    release.set()

    with pytest.raises(KubeError):
        await first
    await second
    assert len(run.runs) == 2
    await coalescer.reconcile("ns", "a")  # after the last run covered it, a new trigger runs anew
    assert len(run.runs) == 3


async def test_different_model_deployments_reconcile_concurrently() -> None:
    run = FakeRun()
    coalescer = Coalescer(run)
    release = run.hold(("ns", "a"))
    slow = asyncio.create_task(coalescer.reconcile("ns", "a"))
    await run.started[("ns", "a")].wait()

    await coalescer.reconcile("ns", "b")  # finishes while "a" is still running

    assert not slow.done()
    release.set()
    await slow
    assert sorted(run.runs) == [("ns", "a"), ("ns", "b")]


async def test_a_burst_of_pokes_within_the_delay_makes_one_run(sleeps: list[float]) -> None:
    run = FakeRun()
    coalescer = Coalescer(run)

    for _ in range(5):
        coalescer.poke("ns", "a")
    await asyncio.wait_for(run.done.wait(), timeout=10)
    await settle()

    assert run.runs == [("ns", "a")]
    assert sleeps == [0.3]


async def test_a_poke_after_the_run_started_schedules_another(sleeps: list[float]) -> None:
    run = FakeRun()
    coalescer = Coalescer(run)
    release = run.hold(("ns", "a"))
    coalescer.poke("ns", "a")
    await run.started[("ns", "a")].wait()

    coalescer.poke("ns", "a")  # a child changed while the reconcile ran: its result may be stale
    release.set()
    await settle()

    assert len(run.runs) >= 2  # not swallowed by the first poke's pending run


async def test_a_temporary_failure_is_poked_again_with_a_doubling_delay_up_to_30s(
    sleeps: list[float],
) -> None:
    run = FakeRun()
    run.failures = [KubeError(503, "unavailable"), KubeError(409, "conflict"), KubeError(0, "timeout")]
    coalescer = Coalescer(run)

    coalescer.poke("ns", "a", delay=10.0)
    await asyncio.wait_for(run.done.wait(), timeout=10)
    await settle()

    assert sleeps == [10.0, 20.0, 30.0, 30.0]
    assert len(run.runs) == 4


async def test_a_short_delay_backs_off_from_at_least_one_second(sleeps: list[float]) -> None:
    run = FakeRun()
    run.failures = [KubeError(429, "throttled"), KubeError(500, "boom")]
    coalescer = Coalescer(run)

    coalescer.poke("ns", "a")
    await asyncio.wait_for(run.done.wait(), timeout=10)

    assert sleeps == [0.3, 1.0, 2.0]


async def test_a_permanent_failure_is_not_retried(sleeps: list[float]) -> None:
    run = FakeRun()
    run.failures = [KubeError(403, "forbidden")]
    coalescer = Coalescer(run)

    coalescer.poke("ns", "a")
    await settle()

    assert run.runs == [("ns", "a")]
    assert sleeps == [0.3]
