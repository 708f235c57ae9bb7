"""Triton's statistics of one model, summed over the pods that serve it (pure).

A model behind the router runs on several pods, each counting only what it served. A client asking
the router for the model's statistics (``tritonclient``'s ``get_inference_statistics``,
``perf_analyzer``) means the model's, so the router asks every pod and adds their answers up here,
per version, in Triton's JSON form (``{"model_stats": [...]}``):

- counts and nanoseconds are summed: ``inference_count``, ``execution_count``, every
  ``{"count", "ns"}`` duration of ``inference_stats`` and of ``response_stats``;
- ``last_inference`` is the latest of the pods';
- ``batch_stats`` are merged per ``batch_size`` (durations summed), ``memory_usage`` per
  ``(type, id)`` (bytes summed);
- each entry is named as the client named the model (pods may serve it under another name).

A duration or figure that one pod reports and another does not counts as zero for the latter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Duration = dict[str, int]


class StatisticsFormatError(ValueError):
    """A pod's answer is not Triton's statistics JSON; the message says what is wrong."""


def merge_model_stats(model: str, answers: Iterable[Any]) -> dict[str, Any]:
    """The pods' answers (parsed JSON of ``GET .../stats``), summed per version, as one answer.

    Raises :class:`StatisticsFormatError` when an answer is not in Triton's form: a pod that
    answers something else must not be silently left out of the sum.
    """
    totals: dict[str, _Total] = {}
    for answer in answers:
        if not isinstance(answer, Mapping) or not isinstance(answer.get("model_stats"), list):
            raise StatisticsFormatError("expected an object with a `model_stats` list")
        for entry in answer["model_stats"]:
            if not isinstance(entry, Mapping):
                raise StatisticsFormatError("each `model_stats` entry must be an object")
            version = entry.get("version")
            if not isinstance(version, str):
                raise StatisticsFormatError("each `model_stats` entry needs a `version` string")
            total = totals.get(version)
            if total is None:
                total = totals[version] = _Total()
            total.add(entry)
    return {"model_stats": [totals[v].as_json(model, v) for v in sorted(totals, key=_version_order)]}


def _version_order(version: str) -> tuple[int, int, str]:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


@dataclass
class _Total:
    """One version's figures, summed over the pods' entries so far."""

    last_inference: int = 0
    inference_count: int = 0
    execution_count: int = 0
    inference_stats: dict[str, Duration] = field(default_factory=dict)
    batch_stats: dict[int, dict[str, Duration]] = field(default_factory=dict)
    response_stats: dict[str, dict[str, Duration]] | None = None  # None: no pod reported any
    memory_usage: dict[tuple[str, int], int] | None = None  # (type, id) → bytes

    def add(self, entry: Mapping[str, Any]) -> None:
        self.last_inference = max(self.last_inference, _integer(entry, "last_inference"))
        self.inference_count += _integer(entry, "inference_count")
        self.execution_count += _integer(entry, "execution_count")
        _add_durations(self.inference_stats, entry.get("inference_stats", {}), "inference_stats")
        for batch in _objects(entry, "batch_stats"):
            durations = {k: v for k, v in batch.items() if k != "batch_size"}
            _add_durations(
                self.batch_stats.setdefault(_integer(batch, "batch_size"), {}), durations, "batch_stats"
            )
        if "response_stats" in entry:
            responses = entry["response_stats"]
            if not isinstance(responses, Mapping):
                raise StatisticsFormatError("`response_stats` must be an object")
            kept = self.response_stats = self.response_stats or {}
            for key, durations in responses.items():
                _add_durations(kept.setdefault(str(key), {}), durations, "response_stats")
        if "memory_usage" in entry:
            usage = self.memory_usage = self.memory_usage or {}
            for memory in _objects(entry, "memory_usage"):
                key = (str(memory.get("type", "")), _integer(memory, "id"))
                usage[key] = usage.get(key, 0) + _integer(memory, "byte_size")

    def as_json(self, model: str, version: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": model,
            "version": version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": self.inference_stats,
            "batch_stats": [
                {"batch_size": size, **self.batch_stats[size]} for size in sorted(self.batch_stats)
            ],
        }
        if self.response_stats is not None:
            doc["response_stats"] = self.response_stats
        if self.memory_usage is not None:
            doc["memory_usage"] = [
                {"type": kind, "id": ident, "byte_size": size}
                for (kind, ident), size in sorted(self.memory_usage.items())
            ]
        return doc


def _objects(entry: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """A list of objects (absent: empty)."""
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise StatisticsFormatError(f"`{key}` must be a list of objects")
    return value


def _add_durations(into: dict[str, Duration], durations: Any, where: str) -> None:
    if not isinstance(durations, Mapping):
        raise StatisticsFormatError(f"`{where}` must be an object")
    for key, duration in durations.items():
        if not isinstance(duration, Mapping):
            raise StatisticsFormatError(f"`{where}.{key}` must be a {{count, ns}} object")
        kept = into.setdefault(str(key), {"count": 0, "ns": 0})
        kept["count"] += _integer(duration, "count")
        kept["ns"] += _integer(duration, "ns")


def _integer(document: Mapping[str, Any], key: str) -> int:
    """A non-negative integer field (absent: 0). protobuf's JSON writes 64-bit ones as strings."""
    value = document.get(key, 0)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StatisticsFormatError(f"`{key}` must be a non-negative integer")
    return value
