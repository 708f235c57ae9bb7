"""How many replicas a ModelDeployment should have, from its observed concurrency (Knative KPA style).

The decision is a pure function of the settings, the state carried from the previous step and
this step's inputs, so it is tested with recorded metric series and no cluster. The operator's
loop only gathers the inputs (the routers' concurrency, pod states) and writes the result through
the scale subresource. Each sample is the routers' *time-averaged* concurrency over the last
scrape interval (``modelplane_router_concurrency_seconds_total``, see ``metrics.py``), so the
windows below average averages: fast requests no longer make the signal jump between 0 and the
number of clients from one sample to the next.

The model:
- concurrency is averaged over a *stable* window (default 60 s) and a short *panic* window
  (default 6 s); desired = ceil(average / target per replica);
- when the panic-window demand reaches the panic threshold (default 200 % of what the ready pods
  can take), the autoscaler panics: it follows the panic window up and does not scale down until
  a whole stable window passes calm;
- changes are bounded by the max scale-up/down rates per step, and a scale-down only happens once
  the lower recommendation has held for the scale-down delay;
- with ``minReplicas: 0`` it scales to zero after the grace period without traffic, and back to
  one (or more) as soon as the router reports requests waiting;
- generative models: when sequences keep waiting in the engines (the pods' ``waiting`` queue
  averages one or more over the panic window), the pods are full below the target: the batch a
  full pod runs becomes the target (so the streams in flight ask for pods that can run them all,
  through the same windows), until a whole stable window passes with no queue (see
  :func:`engine_saturation`);
- GPU awareness: pods Pending because no node has a free GPU are not capacity; while any are
  unschedulable the request is held (never raised again and again), and pods still starting are
  not scaled away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from modelplane.api.v1alpha1 import AutoscalingSpec


@dataclass(frozen=True)
class Settings:
    """The autoscaling spec, in the units the decision uses."""

    min_replicas: int
    max_replicas: int
    target: float
    stable_window: float
    panic_window: float
    panic_threshold: float  # a ratio: 2.0 means 200 %
    max_scale_up_rate: float
    max_scale_down_rate: float
    scale_down_delay: float
    scale_to_zero_grace: float

    @classmethod
    def from_spec(cls, spec: AutoscalingSpec) -> Settings:
        return cls(
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            target=spec.target_concurrency,
            stable_window=float(spec.stable_window_seconds),
            panic_window=float(spec.panic_window_seconds),
            panic_threshold=spec.panic_threshold_percent / 100.0,
            max_scale_up_rate=spec.max_scale_up_rate,
            max_scale_down_rate=spec.max_scale_down_rate,
            scale_down_delay=float(spec.scale_down_delay_seconds),
            scale_to_zero_grace=float(spec.scale_to_zero_grace_period_seconds),
        )


@dataclass(frozen=True)
class Sample:
    """Requests for the deployment (in flight plus held by the routers), averaged over the scrape interval
    that ended at ``time``."""

    time: float
    concurrency: float
    engine_waiting: float | None = None  # generative: sequences waiting in the pods' engines
    engine_running: float | None = None  # generative: sequences in the pods' running batches


@dataclass(frozen=True)
class Inputs:
    """What the loop observed at ``now``."""

    now: float
    samples: tuple[Sample, ...]
    current_replicas: int  # spec.replicas in force
    ready_pods: int
    starting_pods: int = 0  # scheduled, not yet ready
    unschedulable_pods: int = 0  # Pending with FailedScheduling
    activation_requested: bool = False  # the router holds requests for a scaled-to-zero model


@dataclass(frozen=True)
class State:
    """Carried from one decision to the next."""

    panic_since: float | None = None
    panic_peak: int = 0
    last_traffic: float | None = None
    # (time, recommendation) pairs within the scale-down delay, oldest first.
    recommendations: tuple[tuple[float, int], ...] = field(default_factory=tuple)
    # Generative: the running sequences per pod the engines held when last full, and when.
    engine_capacity: float | None = None
    saturated_at: float | None = None


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    stable_concurrency: float
    panic_concurrency: float
    panicking: bool


def window_average(samples: tuple[Sample, ...], now: float, window: float) -> float:
    """Mean concurrency of the samples taken in the last ``window`` seconds (0 with none)."""
    recent = [s.concurrency for s in samples if now - window < s.time <= now]
    return sum(recent) / len(recent) if recent else 0.0


def burst_average(samples: tuple[Sample, ...], now: float, window: float) -> float:
    """The panic window's mean, counted from the first busy sample when the window began idle.

    A burst after a quiet spell is averaged over the seconds it has lasted, not diluted by the idle
    seconds still in the window (Knative averages a partly filled window the same way): 28 requests
    in flight for one second after five idle ones read 28, not 4.7, so the first decision after a
    step already asks for what the step needs. Trailing idle seconds still count, so the average of
    a burst that has ended decays as before.
    """
    recent = [s.concurrency for s in sorted(samples, key=lambda s: s.time) if now - window < s.time <= now]
    first_busy = next((i for i, c in enumerate(recent) if c > 0), len(recent))
    busy = recent[first_busy:]
    return sum(busy) / len(busy) if busy else 0.0


#: Mean sequences waiting in the engines over the panic window from which the pods count as full. A
#: sequence waits a scheduling step even in an idle engine; only a queue that persists means the
#: engines have no room (a full batch or a full KV cache).
SATURATION_WAITING = 1.0


@dataclass(frozen=True)
class Saturation:
    """The engines' queues over the panic window, when they show the pods are full."""

    waiting: float  # mean sequences waiting, over all pods
    running: float  # most sequences running at once, over all pods


def engine_saturation(samples: tuple[Sample, ...], now: float, window: float) -> Saturation | None:
    """The engines' queues over ``window`` when sequences kept waiting in them, else None.

    Waiting is the mean (a queue must persist to count); running is the largest sum seen, since the
    batch never exceeds what the engines hold, and a pod that has just become ready (running
    nothing yet) or one woken from zero would pull a mean below what a full pod holds.
    Only samples carrying the engines' figures count (tensor models have none, so never saturate).
    """
    recent = [
        (s.engine_waiting, s.engine_running)
        for s in samples
        if now - window < s.time <= now and s.engine_waiting is not None and s.engine_running is not None
    ]
    if not recent:
        return None
    waiting = sum(w for w, _ in recent) / len(recent)
    running = max(r for _, r in recent)
    return Saturation(waiting, running) if waiting >= SATURATION_WAITING and running > 0 else None


def _engine_capacity(
    settings: Settings, state: State, now: float, saturation: Saturation | None, ready_pods: int
) -> tuple[float | None, float | None]:
    """The running sequences per pod the engines hold when full, and since when it is known.

    Learned whenever the engines are full; forgotten once a whole stable window passes without a
    queue, so a capacity seen under unusual load (very long prompts filling the KV cache) does not
    hold the deployment large for ever, and the scale-down that follows cannot flap faster than that.
    """
    if saturation is not None and ready_pods > 0:
        return saturation.running / ready_pods, now
    if state.saturated_at is not None and now - state.saturated_at < settings.stable_window:
        return state.engine_capacity, state.saturated_at
    return None, None


def decide(settings: Settings, state: State, inputs: Inputs) -> tuple[Decision, State]:
    """One autoscaling step: the replicas wanted now, why, and the state for the next step."""
    now = inputs.now
    stable = window_average(inputs.samples, now, settings.stable_window)
    panic = burst_average(inputs.samples, now, settings.panic_window)
    latest = max(inputs.samples, key=lambda s: s.time).concurrency if inputs.samples else 0.0
    # The idle period counts from the first observation: a new deployment (or a restarted loop)
    # keeps its replicas for the grace period before it may go to zero. It does not count while no
    # replica is ready yet but one is starting (an image pull, a model loading): a deployment gets
    # the whole grace period to be used once it can answer, however long its first start took.
    first_start = inputs.ready_pods == 0 and inputs.starting_pods > 0
    busy = latest > 0 or panic > 0 or inputs.activation_requested or first_start
    last_traffic = now if busy or state.last_traffic is None else state.last_traffic

    # Generative pods that are full below the target take only what their engines hold.
    saturation = engine_saturation(inputs.samples, now, settings.panic_window)
    engine_capacity, saturated_at = _engine_capacity(settings, state, now, saturation, inputs.ready_pods)
    target = settings.target if engine_capacity is None else min(settings.target, engine_capacity)

    want_stable = math.ceil(stable / target)
    want_panic = math.ceil(panic / target)
    capacity = max(inputs.ready_pods, 1)

    # Panic: the short window asks for far more than the ready pods can take.
    over_threshold = want_panic / capacity >= settings.panic_threshold and want_panic > inputs.ready_pods
    panic_since = state.panic_since
    if over_threshold:
        panic_since = panic_since if panic_since is not None else now
    elif panic_since is not None and now - panic_since >= settings.stable_window:
        panic_since = None
    panicking = panic_since is not None

    if panicking:
        recommendation = max(want_panic, state.panic_peak if state.panic_since is not None else 0)
        reason = f"panic: {panic:.1f} in flight over {settings.panic_window:.0f}s"
    else:
        recommendation = want_stable
        reason = f"{stable:.1f} in flight over {settings.stable_window:.0f}s, target {settings.target:g}"
    if target < settings.target:
        reason += f" (engines hold {target:.1f} a pod)"
    panic_peak = recommendation if panicking else 0

    # Rate limits relative to the ready pods (pods that cannot be placed are not capacity).
    max_up = math.ceil(settings.max_scale_up_rate * capacity)
    max_down = math.floor(inputs.ready_pods / settings.max_scale_down_rate)
    recommendation = min(recommendation, max_up)
    if inputs.ready_pods > 0:
        recommendation = max(recommendation, max_down)

    # Scale-down delay: act on the highest recommendation of the last `scale_down_delay` seconds.
    history = tuple((t, r) for t, r in state.recommendations if now - t < settings.scale_down_delay)
    history = (*history, (now, recommendation))
    if not panicking:
        recommendation = max(r for _, r in history)

    desired = _bounded(settings, recommendation, last_traffic, now)
    if desired == 0 < inputs.current_replicas:
        reason = f"no traffic for {settings.scale_to_zero_grace:.0f}s: scale to zero"
    if inputs.activation_requested and desired == 0:
        desired, reason = max(1, settings.min_replicas), "activation: requests are waiting"

    # GPU awareness.
    if inputs.unschedulable_pods > 0 and desired > inputs.current_replicas:
        desired = inputs.current_replicas
        reason = f"holding at {desired}: {inputs.unschedulable_pods} pod(s) wait for a free GPU"
    elif inputs.starting_pods > 0 and desired < inputs.current_replicas:
        floor_ = min(inputs.current_replicas, inputs.ready_pods + inputs.starting_pods)
        if desired < floor_:
            desired = floor_
            reason = f"holding at {desired}: {inputs.starting_pods} pod(s) still starting"

    decision = Decision(
        desired=desired,
        reason=reason,
        stable_concurrency=stable,
        panic_concurrency=panic,
        panicking=panicking,
    )
    next_state = replace(
        state,
        panic_since=panic_since,
        panic_peak=panic_peak,
        last_traffic=last_traffic,
        recommendations=history,
        engine_capacity=engine_capacity,
        saturated_at=saturated_at,
    )
    return decision, next_state


def _bounded(settings: Settings, recommendation: int, last_traffic: float | None, now: float) -> int:
    """Clamp to [min, max]; allow zero only after the grace period without traffic."""
    desired = min(max(recommendation, settings.min_replicas), settings.max_replicas)
    if desired == 0:
        idle_for = math.inf if last_traffic is None else now - last_traffic
        if idle_for < settings.scale_to_zero_grace:
            desired = 1
    return desired
