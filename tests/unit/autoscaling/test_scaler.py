"""One deployment's autoscaling memory, as the operator and the local stack both drive it."""

from __future__ import annotations

from dataclasses import replace

from modelplane.api.v1alpha1 import AutoscalingSpec
from modelplane.autoscaling.decide import Sample, Settings
from modelplane.autoscaling.load import ModelLoad
from modelplane.autoscaling.scaler import PodCounts, Scaler, wants_activation

SETTINGS = Settings.from_spec(
    AutoscalingSpec.model_validate(
        {
            "minReplicas": 0,
            "maxReplicas": 10,
            "targetConcurrency": 4,
            "stableWindowSeconds": 10,
            "panicWindowSeconds": 6,
            "scaleToZeroGracePeriodSeconds": 30,
        }
    )
)


def test_the_window_keeps_only_the_samples_of_the_stable_window() -> None:
    scaler = Scaler()
    for t in range(0, 25, 2):
        window = scaler.window(Sample(float(t), 1.0), stable_window=10.0)
    assert [s.time for s in window] == [16.0, 18.0, 20.0, 22.0, 24.0]
    assert len(scaler.samples) == 5  # memory is bounded by the window, however long it runs


def test_steps_carry_the_state_so_load_over_the_target_scales_up_and_a_quiet_window_comes_down() -> None:
    scaler, replicas = Scaler(), 1
    for t in range(5):
        replicas = scaler.step(
            SETTINGS, float(t), ModelLoad(in_flight=12.0), replicas, PodCounts(replicas)
        ).desired
    assert replicas == 3  # 12 in flight at 4 per replica
    at_zero = None
    for t in range(5, 200):
        replicas = scaler.step(SETTINGS, float(t), ModelLoad(), replicas, PodCounts(replicas)).desired
        at_zero = t if replicas == 0 and at_zero is None else at_zero
    # The window emptied, then a whole grace period passed without traffic since the last busy
    # sample (t=4): only then the last replica went.
    assert at_zero is not None
    assert at_zero >= 4 + 30


def test_requests_queued_for_a_deployment_at_zero_wake_it() -> None:
    queued = ModelLoad(queued=1.0)
    assert wants_activation(queued, current_replicas=0)
    assert not wants_activation(queued, current_replicas=2)  # it is up: the queue drains by itself
    assert not wants_activation(None, current_replicas=0)
    assert not wants_activation(ModelLoad(in_flight=3.0), current_replicas=0)
    no_grace = replace(SETTINGS, scale_to_zero_grace=0.0)
    idle = ModelLoad(average=0.0)  # nothing averaged over the interval: no reason to scale up
    assert Scaler().step(no_grace, 100.0, idle, 0, PodCounts()).desired == 0
    decision = Scaler().step(no_grace, 100.0, ModelLoad(queued=1.0, average=0.0), 0, PodCounts())
    assert (decision.desired, decision.reason) == (1, "activation: requests are waiting")


def test_an_activation_asked_for_directly_wakes_a_deployment_without_load() -> None:
    # The local stack's router calls back when a request arrives, before any load is reported.
    no_grace = replace(SETTINGS, scale_to_zero_grace=0.0)
    assert Scaler().step(no_grace, 100.0, None, 0, PodCounts()).desired == 0
    decision = Scaler().step(no_grace, 100.0, None, 0, PodCounts(), activation_requested=True)
    assert (decision.desired, decision.reason) == (1, "activation: requests are waiting")


def test_pods_still_starting_are_not_scaled_away() -> None:
    scaler = Scaler()
    decision = scaler.step(SETTINGS, 0.0, None, 2, PodCounts(ready=0, starting=2))
    assert decision.desired == 2


def test_a_generative_models_engine_queues_reach_the_decision() -> None:
    # 3 streams a pod fits the target of 4, but the engines hold 2 and queue the third.
    scaler = Scaler()
    load = ModelLoad(in_flight=3.0, engine_waiting=1.0, engine_running=2.0)
    decision = scaler.step(SETTINGS, 0.0, load, 1, PodCounts(1))
    assert decision.desired == 2
    assert scaler.state.engine_capacity == 2.0
    assert (scaler.samples[-1].engine_waiting, scaler.samples[-1].engine_running) == (1.0, 2.0)
