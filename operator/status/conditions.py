"""Condition bookkeeping: ``lastTransitionTime`` moves only when a condition's status flips."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from modelplane.api.v1alpha1 import Condition

#: The order the conditions are listed in status, for stable output.
CONDITION_ORDER = ("ModelResolved", "Scheduled", "Progressing", "Available", "Ready")


def now_rfc3339() -> str:
    """The current time in the form Kubernetes uses for timestamps."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    existing: Sequence[Condition], updates: Iterable[Condition], now: str
) -> list[Condition]:
    """Apply ``updates`` to ``existing``: a condition keeps its transition time unless its status changes.

    Conditions not named in ``updates`` are kept as they are (another controller may own them).
    """
    by_type = {condition.type: condition for condition in existing}
    for update in updates:
        previous = by_type.get(update.type)
        flipped = previous is None or previous.status != update.status
        since = now if flipped or previous is None else previous.last_transition_time or now
        by_type[update.type] = update.model_copy(update={"last_transition_time": since})
    rank = {name: i for i, name in enumerate(CONDITION_ORDER)}
    return sorted(by_type.values(), key=lambda c: (rank.get(c.type, len(rank)), c.type))


def transitions(before: Sequence[Condition], after: Sequence[Condition]) -> list[Condition]:
    """Conditions whose status or reason changed: each deserves a Kubernetes Event."""
    old = {c.type: (c.status, c.reason) for c in before}
    return [c for c in after if old.get(c.type) != (c.status, c.reason)]
