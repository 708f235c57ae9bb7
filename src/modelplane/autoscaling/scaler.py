"""One deployment's autoscaling memory between steps, driven by the operator and by the local stack.

Both callers observe the same things each step (the routers' load for the deployment, its replicas
in force and how many of its pods are ready, starting or waiting for a node) and want the same
answer; :class:`Scaler` keeps the sample window and the decision's state, so the two loops hold no
autoscaling logic of their own and cannot drift apart.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from modelplane.autoscaling.decide import Decision, Inputs, Sample, Settings, State, decide
from modelplane.autoscaling.load import ModelLoad


@dataclass(frozen=True)
class PodCounts:
    """The deployment's serving pods (or processes) by state."""

    ready: int = 0
    starting: int = 0
    unschedulable: int = 0  # waiting for a node (no free GPU): not capacity


def wants_activation(load: ModelLoad | None, current_replicas: int) -> bool:
    """Requests wait in a router for a deployment scaled to zero: it must wake up now."""
    return load is not None and load.queued > 0 and current_replicas == 0


@dataclass
class Scaler:
    """The samples within the stable window and the state :func:`decide` carries between steps.

    Kept in memory: a restart of the operator or of the local stack starts a fresh window.
    """

    state: State = field(default_factory=State)
    samples: deque[Sample] = field(default_factory=deque)

    def window(self, sample: Sample, stable_window: float) -> tuple[Sample, ...]:
        """Add ``sample`` and drop those older than the stable window; the window, oldest first."""
        self.samples.append(sample)
        while self.samples and sample.time - self.samples[0].time >= stable_window:
            self.samples.popleft()
        return tuple(self.samples)

    def step(
        self,
        settings: Settings,
        now: float,
        load: ModelLoad | None,
        current_replicas: int,
        pods: PodCounts,
        *,
        activation_requested: bool = False,
    ) -> Decision:
        """Record this step's load and decide the replicas; ``activation_requested`` wakes from zero."""
        sample = (
            Sample(now, load.concurrency, load.engine_waiting, load.engine_running)
            if load is not None
            else Sample(now, 0.0)
        )
        samples = self.window(sample, settings.stable_window)
        inputs = Inputs(
            now=now,
            samples=samples,
            current_replicas=current_replicas,
            ready_pods=pods.ready,
            starting_pods=pods.starting,
            unschedulable_pods=pods.unschedulable,
            activation_requested=activation_requested or wants_activation(load, current_replicas),
        )
        decision, self.state = decide(settings, self.state, inputs)
        return decision
