"""Cross-field rules written once, enforced twice: as CEL by the API server, in Python locally.

A :class:`Rule` pairs a CEL expression (emitted into the CRD as an ``x-kubernetes-validations``
entry) with the Python predicate that means the same thing (run by pydantic when the local stack or
the operator parses a spec). Keeping the two side by side is what lets a unit test evaluate each
CEL rule against its twin on the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticCustomError


@dataclass(frozen=True)
class Rule:
    """A cross-field validation rule of one schema object."""

    cel: str
    message: str
    check: Callable[[Any], bool]

    def as_validation(self) -> dict[str, str]:
        """The CRD form: one entry of ``x-kubernetes-validations``."""
        return {"rule": self.cel, "message": self.message}


def check_rules(obj: Any, rules: tuple[Rule, ...]) -> None:
    """Raise a pydantic validation error carrying the first broken rule's message."""
    for rule in rules:
        if not rule.check(obj):
            raise PydanticCustomError("rule", rule.message)
