"""What the local supervisor should do next: pure decisions over the replicas it observes.

Given, per deployment, how many replicas are wanted at which revision (a digest of the runtime
configuration), and the replica processes that exist, :func:`plan` returns the processes to start
and to stop. Updates roll: replicas of a new revision start first and the old ones stop only when
as many new ones are ready, so the model keeps serving. A replica that exited is replaced, but not
before its back-off has passed (a crash loop does not spin).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

ReplicaState = Literal["starting", "ready", "exited"]


@dataclass(frozen=True)
class Want:
    """The desired replicas of one deployment and the revision they must run."""

    replicas: int
    revision: str


@dataclass(frozen=True)
class ReplicaView:
    """One runtime process as the supervisor sees it."""

    deployment: str
    slot: int
    revision: str
    state: ReplicaState


@dataclass(frozen=True)
class Start:
    deployment: str
    slot: int
    revision: str


@dataclass(frozen=True)
class Stop:
    deployment: str
    slot: int
    reason: str


Action = Start | Stop


def plan(
    wants: Mapping[str, Want],
    replicas: Sequence[ReplicaView],
    blocked: Mapping[tuple[str, int], float] | None = None,
    now: float = 0.0,
) -> list[Action]:
    """The actions that move ``replicas`` toward ``wants``; ``blocked`` maps a slot to the time before
    which it must not be started again (crash back-off)."""
    blocked = blocked or {}
    actions: list[Action] = []
    by_deployment: dict[str, list[ReplicaView]] = {}
    for replica in replicas:
        by_deployment.setdefault(replica.deployment, []).append(replica)
    for name, views in sorted(by_deployment.items()):
        if name not in wants:
            actions.extend(Stop(name, v.slot, "the deployment was removed") for v in views)
    for name, want in sorted(wants.items()):
        actions.extend(_plan_one(name, want, by_deployment.get(name, []), blocked, now))
    return actions


def _plan_one(
    name: str, want: Want, views: list[ReplicaView], blocked: Mapping[tuple[str, int], float], now: float
) -> list[Action]:
    actions: list[Action] = []
    exited = [v for v in views if v.state == "exited"]
    actions.extend(Stop(name, v.slot, "the process exited") for v in exited)
    alive = [v for v in views if v.state != "exited"]
    current = [v for v in alive if v.revision == want.revision]
    old = [v for v in alive if v.revision != want.revision]

    # Too many of the current revision: stop the ones not ready first, then the highest slots.
    surplus = len(current) - want.replicas
    if surplus > 0:
        order = sorted(current, key=lambda v: (v.state == "ready", -v.slot))
        actions.extend(Stop(name, v.slot, "scaled down") for v in order[:surplus])
        current = order[surplus:]

    # Too few: start new replicas on free slots (an exited slot is reused once its back-off passed).
    used = {v.slot for v in alive}
    missing = want.replicas - len(current)
    slot = 0
    while missing > 0:
        if slot not in used and blocked.get((name, slot), 0.0) <= now:
            actions.append(Start(name, slot, want.revision))
            used.add(slot)
            missing -= 1
        elif slot not in used and blocked.get((name, slot), 0.0) > now:
            missing -= 1  # this one waits for its back-off; do not take another slot in its place
        slot += 1

    # Old revision: keep serving until the new revision is fully ready (or nothing is wanted).
    ready_now = sum(1 for v in current if v.state == "ready")
    if old and (ready_now >= want.replicas):
        actions.extend(Stop(name, v.slot, "replaced by a new revision") for v in old)
    return actions
