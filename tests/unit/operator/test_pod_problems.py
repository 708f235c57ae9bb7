"""What is wrong with serving pods, from the statuses the kubelet reports, and what the conditions say.

The statuses are shaped as a kubelet writes them (the test cluster's node agent cannot run out of
memory, so OOMKilled is only here; the e2e tests produce the others on a real control plane).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelplane.operator.status.pods import pod_problem, pod_problems, summarize
from modelplane.operator.status.readiness import Observation, WorkloadState, decide_conditions

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


def stamp(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


STARTUP_PROBE = {
    "httpGet": {"path": "/v2/health/ready", "port": 8000},
    "periodSeconds": 2,
    "failureThreshold": 300,
}


def pod(
    *,
    init: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
    ready_since: tuple[str, float] = ("False", 120),
    name: str = "iris-abc",
    deleting: bool = False,
) -> dict[str, Any]:
    """A serving pod: the prepare-model init container done and the runtime running, unless given."""
    init_status = {"name": "prepare-model", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    runtime_status = {
        "name": "runtime",
        "state": {"running": {"startedAt": stamp(60)}},
        "ready": False,
        "started": False,
        "restartCount": 0,
    }
    metadata: dict[str, Any] = {"name": name, "namespace": "team-a"}
    if deleting:
        metadata["deletionTimestamp"] = stamp(1)
    return {
        "metadata": metadata,
        "spec": {"containers": [{"name": "runtime", "startupProbe": STARTUP_PROBE}]},
        "status": {
            "conditions": [
                {"type": "Ready", "status": ready_since[0], "lastTransitionTime": stamp(ready_since[1])}
            ],
            "initContainerStatuses": [{**init_status, **(init or {})}],
            "containerStatuses": [{**runtime_status, **(runtime or {})}],
        },
    }


def failed(exit_code: int, message: str = "", reason: str = "Error") -> dict[str, Any]:
    return {
        "terminated": {"exitCode": exit_code, "reason": reason, "message": message, "finishedAt": stamp(5)}
    }


def test_a_failing_download_names_the_model_download_and_quotes_the_log() -> None:
    log_tail = (
        "Traceback ...\nRuntimeError: GET http://registry/api/v1/models/iris/versions/1/artifact: HTTP 401\n"
    )
    problem = pod_problem(
        pod(
            init={
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
                "lastState": failed(1, log_tail),
                "restartCount": 2,
            },
            runtime={"state": {"waiting": {"reason": "PodInitializing"}}},
        ),
        NOW,
    )
    assert problem is not None
    assert problem.reason == "ModelDownloadFailed"
    assert "iris-abc" in problem.message
    assert "exit code 1" in problem.message
    assert "HTTP 401" in problem.message


def test_a_missing_secret_says_which_and_how_to_create_it() -> None:
    # The kubelet's message for a secretKeyRef to a Secret that does not exist.
    waiting = {
        "reason": "CreateContainerConfigError",
        "message": 'secret "modelplane-artifact-token" not found',
    }
    problem = pod_problem(pod(init={"state": {"waiting": waiting}}), NOW)
    assert problem is not None
    assert problem.reason == "SecretNotFound"
    assert "'modelplane-artifact-token'" in problem.message
    assert "kubectl create secret generic modelplane-artifact-token -n team-a" in problem.message
    other = {"reason": "CreateContainerConfigError", "message": "couldn't find key token in ConfigMap x"}
    problem = pod_problem(pod(runtime={"state": {"waiting": other}}), NOW)
    assert problem is not None
    assert problem.reason == "CreateContainerConfigError"


@pytest.mark.parametrize("waiting", ["ImagePullBackOff", "ErrImagePull", "InvalidImageName"])
def test_an_image_that_cannot_be_pulled(waiting: str) -> None:
    message = 'Back-off pulling image "registry.invalid/runtime:1"'
    problem = pod_problem(pod(runtime={"state": {"waiting": {"reason": waiting, "message": message}}}), NOW)
    assert problem is not None
    assert problem.reason == "ImagePullBackOff"
    assert "registry.invalid/runtime:1" in problem.message


def test_a_container_killed_for_memory_is_oomkilled_not_a_plain_crash() -> None:
    problem = pod_problem(
        pod(
            runtime={
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": failed(137, reason="OOMKilled"),
                "restartCount": 3,
            }
        ),
        NOW,
    )
    assert problem is not None
    assert problem.reason == "OOMKilled"
    assert "resources.memory" in problem.message


def test_a_container_that_keeps_exiting_is_crash_looping_with_its_last_words() -> None:
    runtime = {
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": failed(2, "modelplane runtime: error: no such option: --bogus"),
        "restartCount": 4,
    }
    problem = pod_problem(pod(runtime=runtime), NOW)
    assert problem is not None
    assert problem.reason == "CrashLoopBackOff"
    assert "no such option: --bogus" in problem.message
    assert "4 restart(s)" in problem.message
    # Between two back-offs it runs again: still the same trouble until it serves.
    trying = {**runtime, "state": {"running": {"startedAt": stamp(1)}}}
    again = pod_problem(pod(runtime=trying), NOW)
    assert again is not None
    assert again.reason == "CrashLoopBackOff"


def test_a_pod_that_turned_unready_after_starting_fails_its_probe() -> None:
    started = {"started": True, "state": {"running": {"startedAt": stamp(300)}}}
    problem = pod_problem(pod(runtime=started, ready_since=("False", 20)), NOW)
    assert problem is not None
    assert problem.reason == "ProbeFailing"
    assert "readiness probe" in problem.message


def test_a_pod_still_coming_up_is_not_a_problem() -> None:
    # Never ready since before the container started: loading the model, or about to be probed.
    assert pod_problem(pod(runtime={"started": True}, ready_since=("False", 120)), NOW) is None
    assert pod_problem(pod(), NOW) is None  # start-up probe still within its 600 s allowance
    downloading = {"state": {"running": {"startedAt": stamp(30)}}}
    assert pod_problem(pod(init=downloading, runtime={"state": {"waiting": {}}}), NOW) is None


def test_a_start_up_probe_that_never_passes_within_its_allowance_is_probe_failing() -> None:
    slow = {"state": {"running": {"startedAt": stamp(601)}}}
    problem = pod_problem(pod(runtime=slow), NOW)
    assert problem is not None
    assert problem.reason == "ProbeFailing"
    assert "600s" in problem.message


def test_serving_and_terminating_pods_are_fine_whatever_happened_before() -> None:
    recovered = {"ready": True, "started": True, "lastState": failed(1), "restartCount": 1}
    assert pod_problem(pod(runtime=recovered, ready_since=("True", 30)), NOW) is None
    crashing = {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": failed(1)}
    assert pod_problem(pod(runtime=crashing, deleting=True), NOW) is None


def test_the_most_telling_reason_leads_and_counts_the_pods_that_share_it() -> None:
    crash = {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": failed(1)}
    download = {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": failed(1, "401")}
    problems = pod_problems(
        [
            pod(name="a", runtime=crash),
            pod(name="b", init=download),
            pod(name="c", init=download),
            pod(name="d", runtime={"ready": True}),
        ],
        NOW,
    )
    assert [p.reason for p in problems] == ["ModelDownloadFailed", "ModelDownloadFailed", "CrashLoopBackOff"]
    summary = summarize(problems)
    assert summary is not None
    assert summary.reason == "ModelDownloadFailed"
    assert summary.message.startswith("pod b:")
    assert summary.message.endswith("(and 1 more pod(s) with the same reason)")
    assert summarize([]) is None


def test_a_long_log_tail_is_cut_to_fit_a_condition() -> None:
    noisy = {
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": failed(1, "x" * 5000 + " END"),
    }
    problem = pod_problem(pod(runtime=noisy), NOW)
    assert problem is not None
    assert problem.message.endswith("END; 0 restart(s))")
    assert len(problem.message) < 600


def _conditions(obs: Observation) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason or "") for c in decide_conditions(obs)}


def test_a_crash_loop_with_no_replica_serving_is_not_available_and_not_ready_for_that_reason() -> None:
    # The case a user saw: "Ready=False Scaling, 0 of 3 replicas ready" while every pod crashed.
    problem = summarize(pod_problems([pod(init={"state": {"terminated": failed(1)["terminated"]}})], NOW))
    starting = WorkloadState(
        generation=1,
        observed_generation=1,
        replicas=3,
        updated_replicas=3,
        ready_replicas=0,
        available_replicas=0,
    )
    conditions = _conditions(
        Observation(
            generation=1, desired_replicas=3, resolved="iris v1", workload=starting, pod_problem=problem
        )
    )
    assert conditions["Available"] == ("False", "ModelDownloadFailed")
    assert conditions["Ready"] == ("False", "ModelDownloadFailed")
    assert conditions["Progressing"] == ("True", "Scaling")  # until the rollout's deadline passes


def test_a_troubled_pod_beside_serving_ones_keeps_available_but_not_ready() -> None:
    crash = {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": failed(1)}
    problem = summarize(pod_problems([pod(runtime=crash)], NOW))
    partly = WorkloadState(
        generation=1,
        observed_generation=1,
        replicas=3,
        updated_replicas=3,
        ready_replicas=2,
        available_replicas=2,
    )
    conditions = _conditions(
        Observation(
            generation=1, desired_replicas=3, resolved="iris v1", workload=partly, pod_problem=problem
        )
    )
    assert conditions["Available"] == ("True", "MinimumReplicasAvailable")
    assert conditions["Ready"] == ("False", "CrashLoopBackOff")
