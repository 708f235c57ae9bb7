"""The autoscaling decision, driven by recorded load series through a small simulated deployment."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import generate_latest

from modelplane.api.v1alpha1 import AutoscalingSpec
from modelplane.autoscaling.decide import Decision, Inputs, Sample, Settings, State, decide
from modelplane.autoscaling.load import (
    ConcurrencyAverager,
    Scrape,
    parse_router_metrics,
    parse_router_page,
)
from modelplane.serving.router.metrics import RouterMetrics

STEP = 2.0  # the loop's period, seconds


@dataclass
class Simulation:
    """A deployment whose pods become ready `startup` seconds after they are asked for, and only as
    many as `gpu_slots` can be placed. Load is a closed loop: `load(t)` clients always in flight."""

    settings: Settings
    load: Callable[[float], float]
    startup: float = 6.0
    gpu_slots: int = 1000
    replicas: int = 1
    pods_started: list[float] = field(default_factory=list)
    state: State = field(default_factory=State)
    samples: list[Sample] = field(default_factory=list)
    timeline: list[tuple[float, Decision, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pods_started = [-1000.0] * self.replicas

    def run(self, until: float, activation: Callable[[float], bool] = lambda t: False) -> None:
        t = self.timeline[-1][0] + STEP if self.timeline else 0.0
        while t <= until:
            for tick in (t - 1.0, t):
                self.samples.append(Sample(time=tick, concurrency=self.load(tick)))
            self.samples = [s for s in self.samples if t - s.time < self.settings.stable_window]
            placed = self.pods_started[: self.gpu_slots]
            ready = sum(1 for start in placed if t - start >= self.startup)
            inputs = Inputs(
                now=t,
                samples=tuple(self.samples),
                current_replicas=self.replicas,
                ready_pods=ready,
                starting_pods=len(placed) - ready,
                unschedulable_pods=max(0, len(self.pods_started) - self.gpu_slots),
                activation_requested=activation(t) and self.replicas == 0,
            )
            decision, self.state = decide(self.settings, self.state, inputs)
            self._scale_to(decision.desired, t)
            self.timeline.append((t, decision, ready))
            t += STEP

    def _scale_to(self, desired: int, now: float) -> None:
        if desired > len(self.pods_started):
            self.pods_started += [now] * (desired - len(self.pods_started))
        else:
            # Like the ReplicaSet controller: remove unready and youngest pods first.
            self.pods_started = sorted(self.pods_started)[:desired]
        self.replicas = desired

    def desired_at(self, t: float) -> int:
        return next(d.desired for time, d, _ in self.timeline if time >= t)

    def ready_at(self, t: float) -> int:
        return next(ready for time, _, ready in self.timeline if time >= t)


def settings(**overrides: object) -> Settings:
    spec = AutoscalingSpec.model_validate(
        {
            "minReplicas": 1,
            "maxReplicas": 10,
            "targetConcurrency": 4,
            "scaleDownDelaySeconds": 30,
            **overrides,
        }
    )
    return Settings.from_spec(spec)


def step_load(start: float, stop: float, level: float) -> Callable[[float], float]:
    return lambda t: level if start <= t < stop else 0.0


def test_step_to_32_concurrent_reaches_8_replicas_fast_through_panic_mode() -> None:
    sim = Simulation(settings(), step_load(10, 130, 32))
    sim.run(until=60)
    assert sim.desired_at(16) >= 8, "the panic window should react within seconds of the step"
    assert sim.ready_at(40) >= 6, "≥ 6 ready replicas within 30 s of the step"
    assert any(d.panicking for _, d, _ in sim.timeline)


def test_a_step_after_idle_asks_for_its_replicas_at_the_first_busy_sample() -> None:
    # Five idle seconds, then 28 in flight: the panic window averages the burst, not the idle
    # seconds still in it, so the first decision after the step already asks for ceil(28/4) = 7.
    samples = (*(Sample(time=float(t), concurrency=0.0) for t in range(5)), Sample(5.0, 28.0))
    inputs = Inputs(now=5.0, samples=samples, current_replicas=1, ready_pods=1, starting_pods=0)
    decision, _ = decide(settings(), State(last_traffic=0.0), inputs)
    assert decision.panicking
    assert decision.panic_concurrency == 28.0
    assert decision.desired == 7
    # The stable window still averages everything it holds: a single busy second after a quiet
    # minute is not steady load.
    assert decision.stable_concurrency == 28.0 / 6


def test_back_to_min_after_load_stops_plus_window_and_delay_without_thrashing() -> None:
    sim = Simulation(settings(), step_load(10, 130, 32))
    sim.run(until=400)
    assert sim.desired_at(140) >= 8, "no scale-down right after the load stops"
    assert sim.desired_at(130 + 60 + 30 + 2 * STEP + 60) == 1
    downs = [
        (t, d.desired)
        for (t, d, _), (_, prev, _) in zip(sim.timeline[1:], sim.timeline[:-1], strict=True)
        if d.desired < prev.desired
    ]
    ups_after_drop = [t for t, d, _ in sim.timeline if t > 140 and d.desired > sim.desired_at(t - STEP)]
    assert downs, "it does scale down eventually"
    assert ups_after_drop == [], "no flapping back up once the load is gone"


def test_steady_load_settles_at_ceil_concurrency_over_target() -> None:
    sim = Simulation(settings(), lambda t: 10.0)
    sim.run(until=300)
    assert {d.desired for t, d, _ in sim.timeline if t > 200} == {3}


def test_max_replicas_caps_and_scale_up_rate_limits_each_step() -> None:
    sim = Simulation(settings(maxReplicas=5, maxScaleUpRate=2), step_load(0, 1000, 200))
    sim.run(until=60)
    assert max(d.desired for _, d, _ in sim.timeline) == 5
    assert sim.timeline[0][1].desired <= 2, "from one ready pod, at most 2x in one step"


def test_scale_to_zero_after_grace_and_activation_on_the_next_request() -> None:
    s = settings(
        minReplicas=0, scaleToZeroGracePeriodSeconds=30, scaleDownDelaySeconds=0, stableWindowSeconds=20
    )
    sim = Simulation(s, step_load(0, 20, 4), startup=4)
    sim.run(until=40)
    assert sim.desired_at(40) == 1, "still within the grace period"
    sim.run(until=120)
    assert sim.desired_at(100) == 0, "idle past the grace period: zero replicas"
    wake_at = 120 + STEP
    sim.load = step_load(wake_at, 1000, 1)
    sim.run(until=wake_at + 10, activation=lambda t: t >= wake_at)
    assert sim.desired_at(wake_at) >= 1, "requests waiting at zero activate at once"
    assert sim.timeline[-1][1].desired >= 1


def test_a_new_deployment_without_traffic_serves_for_the_grace_period_before_zero() -> None:
    s = settings(minReplicas=0, scaleToZeroGracePeriodSeconds=30, scaleDownDelaySeconds=0)
    sim = Simulation(s, lambda t: 0.0)
    sim.run(until=20)
    assert {d.desired for _, d, _ in sim.timeline} == {1}, "no traffic yet is not idleness yet"
    sim.run(until=60)
    assert sim.desired_at(60) == 0


def test_a_pod_still_starting_is_not_scaled_away_even_to_zero() -> None:
    s = settings(minReplicas=0, scaleToZeroGracePeriodSeconds=6, scaleDownDelaySeconds=0)
    sim = Simulation(s, lambda t: 0.0, startup=60)  # slower to start than the grace period
    sim.pods_started = [0.0]  # a new deployment: its one pod starts now
    sim.run(until=50)
    assert {d.desired for _, d, _ in sim.timeline} == {1}, "the starting pod is kept"
    sim.run(until=120)
    # Once ready (at 60 s), it gets the whole grace period: counted from the last step that saw it
    # still starting (58 s; steps are 2 s apart), not from when the deployment was made.
    first_zero = min(t for t, d, _ in sim.timeline if d.desired == 0)
    assert first_zero >= 58.0 + 6, f"scaled to zero at {first_zero}s, before its grace period ran"
    assert sim.desired_at(120) == 0, "once it has started and stays idle, it goes"


def test_min_replicas_one_never_goes_to_zero() -> None:
    sim = Simulation(settings(minReplicas=1), lambda t: 0.0)
    sim.run(until=300)
    assert {d.desired for _, d, _ in sim.timeline} == {1}


def test_gpu_shortage_holds_the_request_instead_of_raising_it_again_and_again() -> None:
    sim = Simulation(settings(maxReplicas=20), step_load(0, 1000, 64), gpu_slots=3)
    sim.run(until=120)
    desired = [d.desired for _, d, _ in sim.timeline]
    held_from = next(i for i, (_, d, _) in enumerate(sim.timeline) if "wait for a free GPU" in d.reason)
    assert len(set(desired[held_from:])) == 1, f"replicas kept changing while GPUs were short: {desired}"
    assert max(desired) < 20


def test_pods_still_starting_are_not_scaled_away() -> None:
    # Load spikes then vanishes while the new pods are still starting (startup 60 s).
    sim = Simulation(
        settings(scaleDownDelaySeconds=0, stableWindowSeconds=10, panicWindowSeconds=2),
        step_load(0, 4, 40),
        startup=60,
    )
    sim.run(until=40)
    peak = max(d.desired for _, d, _ in sim.timeline)
    assert peak > 1
    assert all(d.desired == peak for t, d, _ in sim.timeline if t >= 8 and t < 60 - STEP), sim.timeline


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _record_busy_clients(seconds: int, clients: int = 8, seed: int = 9) -> list[tuple[float, str]]:
    """The router's /metrics once a second while `clients` loop on fast requests (5-15 ms in the
    router, 5-35 ms between requests): a seeded event simulation through the router's real metrics,
    so the text is exactly what a scrape would read."""
    rng = random.Random(seed)
    clock = _Clock()
    metrics = RouterMetrics(clock=clock)
    gauge, load = metrics.model_in_flight("team/iris"), metrics.model_concurrency("team/iris")
    events = [(rng.uniform(0.005, 0.035), 1) for _ in range(clients)]
    heapq.heapify(events)
    pages = []
    for second in range(1, seconds + 1):
        while events[0][0] < second:
            clock.now, delta = heapq.heappop(events)
            load.add(delta)
            if delta > 0:
                gauge.inc()
                heapq.heappush(events, (clock.now + rng.uniform(0.005, 0.015), -1))
            else:
                gauge.dec()
                heapq.heappush(events, (clock.now + rng.uniform(0.005, 0.035), 1))
        clock.now = float(second)
        pages.append((clock.now, generate_latest(metrics.registry).decode()))
    return pages


def _replicas(s: Settings, series: list[tuple[float, float]]) -> list[int]:
    """Replicas the loop sets, stepping every STEP seconds on the latest scraped figure."""
    state, samples, current, out = State(), list[Sample](), 1, []
    for t, concurrency in series:
        if t % STEP:
            continue
        samples = [x for x in (*samples, Sample(t, concurrency)) if t - x.time < s.stable_window]
        decision, state = decide(s, state, Inputs(t, tuple(samples), current, ready_pods=current))
        current = decision.desired
        out.append(current)
    return out


def test_eight_busy_clients_hold_a_steady_replica_count_on_the_averaged_signal() -> None:
    pages = _record_busy_clients(70)
    averager = ConcurrencyAverager()
    averaged = [
        (t, averager.update({"router": Scrape(parse_router_page(text), t)})["team/iris"].concurrency)
        for t, text in pages
    ]
    point = [(t, parse_router_metrics([text])["team/iris"].concurrency) for t, text in pages]
    # The point samples of the in-flight gauge swing over most of their range; the average does not.
    after_first = [c for _, c in averaged[1:]]
    assert max(c for _, c in point) - min(c for _, c in point) >= 4
    assert 2.4 < min(after_first) <= max(after_first) < 2.9
    # A short window and no scale-down delay: the setting that follows whatever the signal does.
    s = settings(targetConcurrency=1, stableWindowSeconds=6, scaleDownDelaySeconds=0)
    on_average = _replicas(s, averaged)
    assert set(on_average) == {3}  # ceil(2.67 / 1), from the first step to the last
    assert len(set(_replicas(s, point))) > 1  # the point samples scale up and down on noise


# -- generative models: the engines' queues -----------------------------------------------------------


def engine_samples(
    until: float, concurrency: float, waiting: float, running: float, start: float = 0.0
) -> tuple[Sample, ...]:
    return tuple(Sample(float(t), concurrency, waiting, running) for t in range(int(start), int(until) + 1))


def test_full_engines_below_the_target_scale_out_to_hold_every_sequence() -> None:
    # Target 16 streams a pod, but the engines hold 8 (a small KV cache): 12 streams on one pod
    # leave 4 waiting. Concurrency alone says one pod is plenty; the queue says two are needed.
    samples = engine_samples(10, concurrency=12, waiting=4, running=8)
    inputs = Inputs(now=10.0, samples=samples, current_replicas=1, ready_pods=1)
    decision, state = decide(settings(targetConcurrency=16), State(last_traffic=0.0), inputs)
    assert decision.desired == 2  # 12 streams at the 8 a full pod runs
    assert "engines hold 8.0 a pod" in decision.reason
    assert state.engine_capacity == 8.0


def test_a_queue_that_does_not_persist_is_not_saturation() -> None:
    # A sequence waits one scheduling step even in an idle engine: a mean below one is noise.
    samples = tuple(Sample(float(t), 6.0, 1.0 if t == 9 else 0.0, 6.0) for t in range(11))
    inputs = Inputs(now=10.0, samples=samples, current_replicas=1, ready_pods=1)
    decision, state = decide(settings(targetConcurrency=16), State(last_traffic=0.0), inputs)
    assert decision.desired == 1
    assert state.engine_capacity is None


def test_tensor_models_have_no_engine_figures_and_never_saturate() -> None:
    samples = tuple(Sample(float(t), 12.0) for t in range(11))
    inputs = Inputs(now=10.0, samples=samples, current_replicas=1, ready_pods=1)
    decision, _ = decide(settings(targetConcurrency=16), State(last_traffic=0.0), inputs)
    assert decision.desired == 1


def test_the_engines_capacity_holds_for_a_stable_window_then_is_forgotten() -> None:
    # Once the queue is gone on two pods, the learned 8 a pod keeps two pods for 12 streams (no
    # flapping back to one that would queue again), until a whole stable window passes calm.
    s = settings(targetConcurrency=16, stableWindowSeconds=60, scaleDownDelaySeconds=6)
    state = State(last_traffic=0.0)
    full = engine_samples(10, concurrency=12, waiting=4, running=8)
    _, state = decide(s, state, Inputs(now=10.0, samples=full, current_replicas=1, ready_pods=1))
    calm = engine_samples(40, concurrency=12, waiting=0, running=12, start=11)
    decision, state = decide(
        s, state, Inputs(now=40.0, samples=(*full, *calm), current_replicas=2, ready_pods=2)
    )
    assert decision.desired == 2
    assert "engines hold 8.0 a pod" in decision.reason
    calm_longer = engine_samples(65, concurrency=12, waiting=0, running=12, start=41)
    decision, state = decide(
        s, state, Inputs(now=65.0, samples=calm_longer, current_replicas=2, ready_pods=2)
    )
    assert (decision.desired, state.engine_capacity) == (2, 8.0)
    later = engine_samples(100, concurrency=12, waiting=0, running=12, start=66)
    decision, state = decide(s, state, Inputs(now=100.0, samples=later, current_replicas=2, ready_pods=2))
    assert state.engine_capacity is None
    assert decision.desired == 1


def test_a_pod_just_woken_does_not_make_the_engines_look_smaller_than_they_are() -> None:
    # The window begins while the only pod was starting (nothing running, all waiting): the batch
    # a full pod holds is what it ran at its fullest, 4, not the window's mean.
    samples = (
        *(Sample(float(t), 12.0, 12.0, 0.0) for t in range(3)),
        *(Sample(float(t), 12.0, 8.0, 4.0) for t in range(3, 7)),
    )
    inputs = Inputs(now=6.0, samples=samples, current_replicas=1, ready_pods=1)
    decision, state = decide(settings(targetConcurrency=32, maxReplicas=10), State(last_traffic=0.0), inputs)
    assert state.engine_capacity == 4.0
    assert decision.desired == 3  # 12 streams at 4 a pod
