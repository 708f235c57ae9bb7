"""Dynamic batching: requests queue per model and run together, up to max_batch_size or the delay.

The event loop only queues and wakes; the forward runs in a worker thread. Requests whose
non-batch dims differ (variable-size inputs) are never concatenated: a batch holds only requests of
one shape. If a batched forward raises, each request of that batch is retried on its own, so one
bad request fails alone and its neighbours still get their results.

The queue delay (``max_queue_delay_microseconds``) is the most the first request of a batch waits
for others, and it waits only while waiting is likely to pay (:func:`worth_waiting`): when the
clients seen in the last second or two are all in the batcher already (a lone client: nobody else
is between two requests) or the recent arrival rate brings no other request within the time left,
the batch goes at once. So one client at a time gets the latency of batching off, and many clients
get full batches; the judgement is re-made at every arrival while the batch waits.

The event loop's clock and timers (libuv's, under uvloop) tick in milliseconds, so the delay is
waited in whole ticks, rounded down (:func:`whole_ticks`), and what is left under a tick is one
pass of the event loop: the requests that have arrived by then join the batch. Handing the timer a
sub-millisecond wait instead would round it to no wait or to a whole millisecond depending on the
float error of ``deadline - now``, which depends on how long the host has been up: a 500 us delay
cost 0.3 ms at one request at a time on a host up for ten minutes and 1.5 ms on one up for twenty.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelplane.serving.runtime.runner import ModelError
from modelplane.serving.runtime.statistics import Execution

Arrays = list[np.ndarray[Any, Any]]
RunFn = Callable[[Sequence[np.ndarray[Any, Any]]], Arrays]


@dataclass(slots=True, eq=False)
class Pending:
    """One queued request: its inputs (batch dim first), batch size and the caller's future."""

    arrays: Arrays
    batch_size: int
    future: asyncio.Future[Arrays]
    enqueued: float = 0.0
    key: tuple[tuple[int, ...], ...] = field(default=())


def shape_key(arrays: Sequence[np.ndarray[Any, Any]]) -> tuple[tuple[int, ...], ...]:
    """What must be equal for two requests to share a batch: every input's non-batch dims."""
    return tuple(tuple(a.shape[1:]) for a in arrays)


def take_batch(pending: deque[Pending], max_batch_size: int) -> list[Pending]:
    """Remove and return the next batch: the oldest request plus later ones of the same shape.

    Requests already answered (the caller went away) are dropped; the others keep their order.
    """
    while pending and pending[0].future.done():
        pending.popleft()
    if not pending:
        return []
    first = pending.popleft()
    batch, size, skipped = [first], first.batch_size, []
    while pending and size < max_batch_size:
        item = pending.popleft()
        if item.future.done():
            continue
        if item.key == first.key and size + item.batch_size <= max_batch_size:
            batch.append(item)
            size += item.batch_size
        else:
            skipped.append(item)
    pending.extendleft(reversed(skipped))
    return batch


def assemble(batch: Sequence[Pending]) -> Arrays:
    """Concatenate the batch's inputs along the batch dim."""
    if len(batch) == 1:
        return batch[0].arrays
    return [np.concatenate([p.arrays[i] for p in batch]) for i in range(len(batch[0].arrays))]


def split(outputs: Sequence[np.ndarray[Any, Any]], sizes: Sequence[int]) -> list[Arrays]:
    """Cut batched outputs back into one list per request; refuse outputs that lost the batch dim."""
    total = sum(sizes)
    for out in outputs:
        if out.ndim == 0 or out.shape[0] != total:
            raise ModelError(
                f"the model returned an output of shape {list(out.shape)} for a batch of {total}; "
                "outputs must keep the batch dim first"
            )
    results: list[Arrays] = []
    start = 0
    for size in sizes:
        results.append([out[start : start + size] for out in outputs])
        start += size
    return results


TIMER_TICK_S = 0.001  # the resolution of the event loop's clock and timers (uvloop: libuv's)


PEAK_WINDOW_S = 1.0  # the in-flight peak is the largest of this window and the one before it
RATE_SMOOTHING = 0.2  # weight of the newest gap in the moving average of the gaps between arrivals


def worth_waiting(
    *, queued: int, max_batch: int, in_flight: int, peak: int, rate: float, left_s: float
) -> bool:
    """Whether a batch of ``queued`` rows should wait (up to ``left_s`` more) for more requests.

    Only when the batch has room, and someone is likely to come: recently more requests were in
    flight at once (``peak``) than are now (``in_flight``: queued plus running), so some clients are
    between two requests; and at the recent arrival rate another request comes within ``left_s``.
    A lone client, or the first request after a quiet spell, is dispatched at once.
    """
    if queued >= max_batch or left_s <= 0:
        return False
    return peak > in_flight and rate * left_s >= 1.0


class ArrivalTracker:
    """The recent in-flight peak and arrival rate of one model, on a monotonic ``clock``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._window_start = clock()
        self._peak_now = 0
        self._peak_before = 0
        self._last: float | None = None
        self._gap_s: float | None = None  # moving average of the gaps between arrivals

    def arrived(self, in_flight: int) -> None:
        """A request arrived; ``in_flight`` counts it."""
        now = self._clock()
        self._roll(now)
        self._peak_now = max(self._peak_now, in_flight)
        if self._last is not None:
            gap = max(now - self._last, 0.0)
            self._gap_s = (
                gap if self._gap_s is None else (1 - RATE_SMOOTHING) * self._gap_s + RATE_SMOOTHING * gap
            )
        self._last = now

    def peak(self) -> int:
        """The most requests in flight at once over the last one to two windows."""
        self._roll(self._clock())
        return max(self._peak_now, self._peak_before)

    def rate(self) -> float:
        """Arrivals per second: from the average gap, lowered by the silence since the last one."""
        if self._gap_s is None or self._last is None:
            return 0.0
        gap = max(self._gap_s, self._clock() - self._last)
        return math.inf if gap <= 0 else 1.0 / gap

    def _roll(self, now: float) -> None:
        elapsed = now - self._window_start
        if elapsed < PEAK_WINDOW_S:
            return
        self._peak_before = self._peak_now if elapsed < 2 * PEAK_WINDOW_S else 0
        self._peak_now = 0
        self._window_start = now


def whole_ticks(seconds: float) -> float:
    """``seconds`` rounded down to whole timer ticks: 0 under one tick (and for a time past)."""
    if seconds <= 0:
        return 0.0
    return math.floor(seconds / TIMER_TICK_S + 1e-9) * TIMER_TICK_S


def run_inline(forward_s: float | None, inline_below_s: float) -> bool:
    """Whether to run a batch on the event loop itself instead of a worker thread.

    Handing a batch to a thread and back costs tens of microseconds; for a model whose forward is
    shorter than that (a small MLP), the hand-off is most of the latency. Such models may run inline
    when the config allows it (``inline_below_us``); anything slower always runs off the loop.
    """
    return forward_s is not None and forward_s < inline_below_s


class Batcher:
    """Queue and workers of one model version."""

    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        *,
        max_batch_size: int,
        max_delay_s: float | None,
        workers: int = 1,
        on_batch: Callable[[int], None] | None = None,
        on_dequeue: Callable[[float], None] | None = None,
        on_executed: Callable[[Execution], None] | None = None,
        inline_below_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        adaptive: bool = True,
    ) -> None:
        self._run = run
        self._executor = executor
        self._batching = max_batch_size > 0 and max_delay_s is not None
        self._max = max(1, max_batch_size)
        self._delay = max_delay_s or 0.0
        self._workers_count = workers
        self._on_batch = on_batch
        self._on_dequeue = on_dequeue
        self._on_executed = on_executed
        self._pending: deque[Pending] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._inline_below = inline_below_s
        self._running = 0
        self._outstanding = 0
        self._arrivals = ArrivalTracker(clock)
        #: False: every batch waits up to the delay for a full batch (Triton's fixed policy).
        self._adaptive = adaptive
        self._clock = clock
        #: Moving average of one forward's duration; None until measured.
        self.forward_s: float | None = None

    def start(self) -> None:
        for i in range(self._workers_count):
            self._workers.append(asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{i}"))

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Let queued and running requests finish (up to ``timeout_s``), then stop the workers.

        Whatever is still queued after the timeout fails with a clear error rather than hanging.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (self._pending or self._running) and loop.time() < deadline:
            self._wake.set()
            await asyncio.sleep(0.005)
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(ModelError("the model was unloaded before this request ran"))

    async def submit(self, arrays: Arrays, batch_size: int) -> Arrays:
        """Queue one request and wait for its outputs."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Arrays] = loop.create_future()
        item = Pending(arrays, batch_size, future, loop.time(), shape_key(arrays))
        self._arrivals.arrived(self._outstanding + 1)
        if (
            self._outstanding == 0
            and run_inline(self.forward_s, self._inline_below)
            and not self._should_wait(batch_size, self._delay, in_flight=1)
        ):
            # Alone, fast, and nobody likely to join: skip the queue and the worker's wake-up.
            return self._run_now(item)
        self._outstanding += 1
        try:
            self._pending.append(item)
            self._queued += batch_size
            self._wake.set()
            return await future
        finally:
            self._outstanding -= 1

    def _run_now(self, item: Pending) -> Arrays:
        if self._on_dequeue is not None:
            self._on_dequeue(0.0)
        if self._on_batch is not None:
            self._on_batch(item.batch_size)
        (result,) = self._run_batch([item])
        if isinstance(result, Exception):
            raise result
        return result

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            if self._batching and self._delay > 0:
                await self._gather(self._pending[0].enqueued + self._delay, loop)
            batch = take_batch(self._pending, self._max if self._batching else 0)
            self._queued -= sum(p.batch_size for p in batch)
            if not batch:
                self._queued = sum(p.batch_size for p in self._pending)
                continue
            await self._execute(batch, loop)

    def _should_wait(self, queued: int, left_s: float, *, in_flight: int) -> bool:
        if not self._batching:
            return False
        if not self._adaptive:
            return queued < self._max and left_s > 0
        return worth_waiting(
            queued=queued,
            max_batch=self._max,
            in_flight=in_flight,
            peak=self._arrivals.peak(),
            rate=self._arrivals.rate(),
            left_s=left_s,
        )

    async def _gather(self, deadline: float, loop: asyncio.AbstractEventLoop) -> None:
        """Let more requests join the batch while it is worth it, until it is full or ``deadline`` comes.

        Re-judged at every arrival (:func:`worth_waiting`): the wait ends as soon as nobody else is
        likely to come in the time left.
        """
        while self._queued < self._max and self._pending:
            left = deadline - loop.time()
            if not self._should_wait(self._queued, left, in_flight=self._outstanding):
                return
            wait = whole_ticks(left)
            if wait == 0:  # under a tick left: one pass of the loop, for what has arrived meanwhile
                await asyncio.sleep(0)
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):  # then what is left is under a tick
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _execute(self, batch: list[Pending], loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        if self._on_dequeue is not None:
            for item in batch:
                self._on_dequeue(now - item.enqueued)
        if self._on_batch is not None:
            self._on_batch(sum(p.batch_size for p in batch))
        self._running += 1
        try:
            if run_inline(self.forward_s, self._inline_below):
                results = self._run_batch(batch)
            else:
                results = await loop.run_in_executor(self._executor, self._run_batch, batch)
        except Exception as exc:  # the executor itself failed (shut down): every caller learns it
            results = [exc] * len(batch)
        except asyncio.CancelledError:  # stopped after its timeout while this batch ran
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(ModelError("the model was unloaded while this request ran"))
            raise
        finally:
            self._running -= 1
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, Exception):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    def _run_batch(self, batch: list[Pending]) -> list[Arrays | Exception]:
        started = time.perf_counter_ns()
        results, input_ns, output_ns = self._run_batch_timed(batch)
        elapsed_ns = time.perf_counter_ns() - started
        elapsed = elapsed_ns / 1e9
        self.forward_s = elapsed if self.forward_s is None else 0.8 * self.forward_s + 0.2 * elapsed
        if self._on_executed is not None:
            self._on_executed(
                Execution(
                    batch_size=sum(p.batch_size for p in batch),
                    inferences=sum(
                        p.batch_size
                        for p, r in zip(batch, results, strict=True)
                        if not isinstance(r, Exception)
                    ),
                    input_ns=input_ns,
                    infer_ns=elapsed_ns - input_ns - output_ns,
                    output_ns=output_ns,
                    requests=len(batch),
                )
            )
        return results

    def _run_batch_timed(self, batch: list[Pending]) -> tuple[list[Arrays | Exception], int, int]:
        """The batch's results, and the nanoseconds spent assembling it and splitting its outputs."""
        if len(batch) == 1:
            return self._run_batch_unmeasured(batch), 0, 0
        try:
            t0 = time.perf_counter_ns()
            arrays = assemble(batch)
            t1 = time.perf_counter_ns()
            outputs = self._run(arrays)
            t2 = time.perf_counter_ns()
            results: list[Arrays | Exception] = list(split(outputs, [p.batch_size for p in batch]))
            return results, t1 - t0, time.perf_counter_ns() - t2
        except Exception:  # retry one by one, so only the request that breaks the model fails
            return [self._run_batch_unmeasured([item])[0] for item in batch], 0, 0

    def _run_batch_unmeasured(self, batch: list[Pending]) -> list[Arrays | Exception]:
        if len(batch) == 1:
            try:
                outputs = self._run(batch[0].arrays)
                if self._batching:
                    split(outputs, [batch[0].batch_size])
                return [outputs]
            except Exception as exc:
                return [exc]
        return self._run_batch_timed(batch)[0]
