"""The registry's deployment records: which ModelDeployment serves which registry version.

The registry refuses to delete a version (or its model) while a record names it, so the operator
reports a record once a version serves (the ModelDeployment is Ready) and removes it when the
version stops serving (a version change, or the ModelDeployment's deletion, through the one
finalizer). The decisions are pure functions; the registry calls sit behind :class:`Records`.

The records reported are kept in ``status.registryRecords``; a record is written there only after
the registry confirmed it, and deletion removes the union of that list and every registry version
the status names, so a crash between the two steps leaks nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, order=True)
class Record:
    """One (model, version) this ModelDeployment serves from the registry."""

    model: str
    version: int

    def as_status(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version}


class RecordError(Exception):
    """The registry could not be told; ``temporary`` says whether retrying may help."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


class Records(Protocol):
    """Reports and removes deployment records in the registry (idempotent; absent is fine)."""

    async def report(self, record: Record, namespace: str, deployment: str) -> None: ...

    async def remove(self, record: Record, namespace: str, deployment: str) -> None: ...


@dataclass(frozen=True)
class RecordPlan:
    """What to change in the registry now."""

    report: tuple[Record, ...] = ()
    remove: tuple[Record, ...] = ()


def plan_records(ready: bool, serving: Iterable[Record], recorded: Iterable[Record]) -> RecordPlan:
    """Report what serves and is not recorded, remove what is recorded and no longer serves.

    Nothing changes until the ModelDeployment is Ready: during a rollout the old version still
    serves, so its record stays, and the new one is recorded only once it actually serves.
    """
    if not ready:
        return RecordPlan()
    serving_set, recorded_set = set(serving), set(recorded)
    return RecordPlan(
        report=tuple(sorted(serving_set - recorded_set)), remove=tuple(sorted(recorded_set - serving_set))
    )


def recorded_in(status: Mapping[str, Any]) -> set[Record]:
    """The records ``status.registryRecords`` lists."""
    found: set[Record] = set()
    for item in status.get("registryRecords") or []:
        if (
            isinstance(item, Mapping)
            and isinstance(item.get("model"), str)
            and isinstance(item.get("version"), int)
        ):
            found.add(Record(item["model"], item["version"]))
    return found


def records_to_clean(status: Mapping[str, Any]) -> set[Record]:
    """Every record that may exist for a ModelDeployment being deleted: the recorded ones and each
    registry version its status names (reported just before a crash that lost the status write)."""
    found = recorded_in(status)
    for role in ("model", "canary", "shadow"):
        served = status.get(role)
        if not isinstance(served, Mapping) or served.get("storageUri"):
            continue
        name, version = served.get("name"), served.get("version")
        if isinstance(name, str) and isinstance(version, int):
            found.add(Record(name, version))
    return found


def uses_registry(spec: Mapping[str, Any]) -> bool:
    """Whether any served version comes from the registry (a version or an alias, not a URI):
    only then can records exist, and only then does the ModelDeployment carry the finalizer."""
    sources = [spec.get("model")]
    traffic = spec.get("traffic") or {}
    sources += [traffic.get("canary"), traffic.get("shadow")]
    return any(isinstance(s, Mapping) and not s.get("storageUri") for s in sources if s is not None)
