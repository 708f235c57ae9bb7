"""The registry's deployment records: when they are reported, removed and cleaned up on deletion."""

from __future__ import annotations

from modelplane.operator.handlers import CLEANUP_MAX_DELAY_SECONDS, cleanup_delay
from modelplane.operator.records import (
    Record,
    RecordPlan,
    plan_records,
    recorded_in,
    records_to_clean,
    uses_registry,
)

V1, V2 = Record("iris", 1), Record("iris", 2)


def test_nothing_is_reported_before_the_deployment_is_ready() -> None:
    assert plan_records(ready=False, serving={V1}, recorded=set()) == RecordPlan()


def test_a_rollout_keeps_the_old_record_until_the_new_version_serves() -> None:
    assert plan_records(ready=False, serving={V2}, recorded={V1}) == RecordPlan()
    assert plan_records(ready=True, serving={V2}, recorded={V1}) == RecordPlan(report=(V2,), remove=(V1,))


def test_a_steady_deployment_changes_nothing() -> None:
    assert plan_records(ready=True, serving={V1, V2}, recorded={V2, V1}) == RecordPlan()


def test_recorded_in_ignores_malformed_entries() -> None:
    status = {"registryRecords": [{"model": "iris", "version": 1}, {"model": "iris"}, "junk", {"version": 2}]}
    assert recorded_in(status) == {V1}
    assert recorded_in({}) == set()


def test_deletion_also_cleans_versions_the_status_serves_but_never_recorded() -> None:
    # A crash between the registry's answer and the status write leaves a record only the
    # served version in the status still names.
    status = {
        "registryRecords": [{"model": "iris", "version": 1}],
        "model": {"name": "iris", "version": 2},
        "canary": {"name": "iris", "storageUri": "https://example.com/m.pt"},
    }
    assert records_to_clean(status) == {V1, V2}


def test_only_models_from_the_registry_use_records() -> None:
    assert uses_registry({"model": {"name": "iris", "alias": "production"}})
    assert not uses_registry({"model": {"name": "iris", "storageUri": "file:///m.pt"}})
    canary = {"canary": {"version": 2, "percent": 10}}
    assert uses_registry({"model": {"name": "iris", "storageUri": "file:///m.pt"}, "traffic": canary})


def test_cleanup_backs_off_exponentially_up_to_a_ceiling() -> None:
    delays = [cleanup_delay(retry) for retry in range(12)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == CLEANUP_MAX_DELAY_SECONDS
    assert delays == sorted(delays)
