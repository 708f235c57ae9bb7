"""The node agent's decisions: pod IPs, GPU indices, env, restart back-off, probe thresholds."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from modelplane.devcluster.agent import backoff, downward, gpus, ipam, logs, pods, probes


def test_pod_ips_are_unique_loopback_addresses_never_the_hosts() -> None:
    used: set[str] = set()
    for _ in range(300):
        ip = ipam.allocate("127.10.0.0/16", used)
        assert ip not in used
        assert ip.startswith("127.10.")
        assert not ip.endswith((".0", ".255"))
        used.add(ip)
    assert "127.0.0.1" not in used


def test_a_released_ip_is_reused_and_exhaustion_is_an_error() -> None:
    first = ipam.allocate("127.10.0.0/30", [])
    assert first == "127.10.0.1"
    second = ipam.allocate("127.10.0.0/30", [first])
    assert second == "127.10.0.2"
    with pytest.raises(ipam.NetworkError, match="no free address"):
        ipam.allocate("127.10.0.0/30", [first, second])
    assert ipam.allocate("127.10.0.0/30", [second]) == first


@pytest.mark.parametrize("network", ["10.0.0.0/8", "127.0.0.0/24", "not-a-network"])
def test_pod_networks_outside_loopback_or_holding_the_host_are_refused(network: str) -> None:
    with pytest.raises(ipam.NetworkError):
        ipam.check_network(network)


def test_gpus_are_assigned_lowest_free_first_and_exclusively() -> None:
    assert gpus.assign(4, [], 2) == [0, 1]
    assert gpus.assign(4, [0, 1], 1) == [2]
    assert gpus.assign(4, [0, 2], 2) == [1, 3]
    assert gpus.assign(4, [0, 1, 2], 2) is None
    assert gpus.assign(0, [], 0) == []
    assert gpus.visible_devices([1, 3]) == "1,3"


def test_gpu_request_is_read_from_limits_then_requests() -> None:
    assert gpus.requested({"resources": {"limits": {"nvidia.com/gpu": "2"}}}) == 2
    assert gpus.requested({"resources": {"requests": {"nvidia.com/gpu": 1}}}) == 1
    assert gpus.requested({"resources": {"limits": {"cpu": "1"}}}) == 0
    assert gpus.requested({}) == 0


POD = {
    "metadata": {"name": "web-1", "namespace": "team", "uid": "u-1", "labels": {"app": "web"}},
    "spec": {
        "nodeName": "gpu-h100-0",
        "serviceAccountName": "default",
        "containers": [
            {
                "name": "main",
                "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "250m"}},
            },
            {"name": "side"},
        ],
    },
}


def test_downward_api_fields_resolve_for_the_pod() -> None:
    container = {
        "name": "main",
        "env": [
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "URL", "value": "http://$(IP):8080/$(NAME)/$(UNDEFINED)/$$(IP)"},
        ],
    }
    env = downward.build_env(container, POD, "127.10.0.7", "127.0.0.1", {}, {}, {})
    assert env["IP"] == "127.10.0.7"
    assert env["NAME"] == "web-1"
    assert env["NS"] == "team"
    assert env["NODE"] == "gpu-h100-0"
    assert env["APP"] == "web"
    assert env["URL"] == "http://127.10.0.7:8080/web-1/$(UNDEFINED)/$(IP)"


def test_resource_field_refs_round_up_in_divisor_units_and_default_to_the_node() -> None:
    def ref(resource: str, divisor: str = "1", container: str = "") -> dict[str, object]:
        r: dict[str, object] = {"resource": resource, "divisor": divisor}
        if container:
            r["containerName"] = container
        return {"name": "X", "valueFrom": {"resourceFieldRef": r}}

    allocatable = {"cpu": "8", "memory": "32Gi"}

    def value(item: dict[str, object], container: str = "main") -> str:
        return downward.build_env({"name": container, "env": [item]}, POD, "", "", {}, {}, allocatable)["X"]

    assert value(ref("limits.cpu")) == "1"  # 500m rounds up to one core
    assert value(ref("limits.cpu", "1m")) == "500"
    assert value(ref("requests.cpu", "1m")) == "250"
    assert value(ref("limits.memory", "1Mi")) == "1024"
    assert value(ref("requests.memory", "1Mi")) == "1024"  # unset request reads as the limit
    assert value(ref("limits.memory", "1Gi"), "side") == "32"  # no limit: the node's allocatable
    assert value(ref("limits.cpu", "1", "side")) == "8"
    with pytest.raises(downward.EnvError, match="unsupported"):
        value(ref("limits"))


def test_config_map_and_secret_refs_and_missing_keys() -> None:
    secret_value = base64.b64encode(b"s3cret").decode()
    container = {
        "name": "main",
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
            {
                "name": "OPT",
                "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope", "optional": True}},
            },
        ],
    }
    env = downward.build_env(
        container, POD, "", "", {"cfg": {"a": "1"}}, {"sec": {"token": secret_value}}, {}
    )
    assert env == {"CFG_a": "1", "TOKEN": "s3cret"}
    broken = {
        "name": "main",
        "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "x"}}}],
    }
    with pytest.raises(downward.EnvError, match="couldn't find key x in secret sec"):
        downward.build_env(broken, POD, "", "", {}, {"sec": {}}, {})
    # A missing Secret is reported in the kubelet's words, which the operator recognizes.
    with pytest.raises(downward.EnvError, match=r'^secret "sec" not found$'):
        downward.build_env(broken, POD, "", "", {}, {}, {})
    assert downward.referenced_objects({"spec": {"containers": [container]}}) == ({"cfg"}, {"sec"})


@pytest.mark.parametrize(("text", "value"), [("500m", "0.5"), ("2", "2"), ("1Ki", "1024"), ("1M", "1000000")])
def test_quantities_parse(text: str, value: str) -> None:
    assert str(downward.parse_quantity(text).normalize()) == str(downward.parse_quantity(value).normalize())


def test_back_off_doubles_to_its_cap_and_resets_after_a_long_run() -> None:
    policy = backoff.Backoff(base=1.0, cap=30.0, reset_after=120.0)
    assert [policy.delay(n) for n in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.delay(1000) == 30.0
    assert policy.next_streak(3, ran_for=5.0) == 4
    assert policy.next_streak(3, ran_for=300.0) == 0


def test_restart_policy_semantics() -> None:
    assert backoff.should_restart("Always", 0)
    assert backoff.should_restart("OnFailure", 1)
    assert not backoff.should_restart("OnFailure", 0)
    assert not backoff.should_restart("Never", 1)


def test_probe_thresholds_flip_only_after_consecutive_results() -> None:
    tracker = probes.ProbeTracker(
        {"periodSeconds": 1, "successThreshold": 2, "failureThreshold": 2}, initial=False
    )
    tracker.start(0.0)
    assert tracker.due(0.0)
    assert not tracker.record(True, 0.0)
    assert not tracker.due(0.5)
    assert tracker.record(True, 1.0)
    assert tracker.result
    assert not tracker.record(False, 2.0)
    assert tracker.result
    assert tracker.record(False, 3.0)
    assert not tracker.result


def test_probe_ports_resolve_by_name() -> None:
    container = {"ports": [{"name": "http", "containerPort": 8080}]}
    assert probes.resolve_port("http", container) == 8080
    assert probes.resolve_port(9000, container) == 9000
    with pytest.raises(ValueError, match="grpc"):
        probes.resolve_port("grpc", container)


def test_clusters_on_one_machine_claim_distinct_pod_networks() -> None:
    first, fd1 = ipam.claim()
    try:
        second, fd2 = ipam.claim()
        try:
            assert first != second
            assert ipam.check_network(first)
            assert ipam.check_network(second)
        finally:
            os.close(fd2)
        again, fd3 = ipam.claim(preferred=second)
        os.close(fd3)
        assert again == second  # released with its holder's file descriptor
    finally:
        os.close(fd1)


def test_mount_paths_in_arguments_and_env_reach_the_volume_directories() -> None:
    from modelplane.devcluster.agent.downward import remap_mount_paths

    mounts = {
        "/models": "/state/pod/volumes/model-repository",
        "/tmp": "/state/pod/volumes/tmp",
        "/models/cache": "/state/pod/volumes/cache",
    }
    assert remap_mount_paths("/models", mounts) == "/state/pod/volumes/model-repository"
    assert remap_mount_paths("/models/iris/1", mounts) == "/state/pod/volumes/model-repository/iris/1"
    assert remap_mount_paths("/models/cache/x", mounts) == "/state/pod/volumes/cache/x"
    assert remap_mount_paths("/tmp", mounts) == "/state/pod/volumes/tmp"
    assert remap_mount_paths("/modelsX", mounts) == "/modelsX"
    assert remap_mount_paths("--host", mounts) == "--host"
    assert remap_mount_paths("127.0.0.1", mounts) == "127.0.0.1"


def test_log_tail_keeps_the_last_lines() -> None:
    data = b"a\nb\nc\n"
    assert logs.tail(data, None) == data
    assert logs.tail(data, 2) == b"b\nc\n"
    assert logs.tail(data, 10) == data
    assert logs.tail(data, 0) == b""


def test_a_failed_containers_message_is_the_end_of_its_log_as_the_kubelet_keeps_it(tmp_path: Path) -> None:
    log = tmp_path / "runtime.log"
    log.write_bytes(b"".join(f"line {i}\n".encode() for i in range(1000)))
    message = pods.log_tail(log)
    assert message.endswith("line 999")
    assert len(message.encode()) <= pods.TERMINATION_LOG_BYTES
    assert len(message.splitlines()) <= pods.TERMINATION_LOG_LINES
    assert pods.log_tail(tmp_path / "missing.log") == ""


@pytest.mark.parametrize(
    ("image", "refused"),
    [
        ("registry.invalid/modelplane/runtime:1", True),
        ("registry.invalid:5000/runtime", True),
        ("ghcr.io/modelplane/runtime:0.1.0", False),
        ("runtime.invalid", False),  # no registry host: a Docker Hub name
        ("", False),
    ],
)
def test_only_images_from_unresolvable_registries_fail_to_pull(image: str, refused: bool) -> None:
    refusal = pods.pull_refusal({"image": image})
    assert (refusal is not None) is refused
    if refusal is not None:
        assert image in refusal
