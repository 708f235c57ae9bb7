"""Routes from ModelDeployments, EndpointSlices and pods, as the Kubernetes discovery builds them."""

from __future__ import annotations

from typing import Any

from modelplane.serving.router.kube_discovery import build_routes


def md(name: str, spec: dict[str, Any], namespace: str = "team") -> tuple[str, dict[str, Any]]:
    return f"{namespace}/{name}", {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def pod(name: str, role: str, version: str | None, namespace: str = "team") -> tuple[str, dict[str, Any]]:
    labels = {"modelplane.io/deployment": "iris", "modelplane.io/role": role}
    if version:
        labels["modelplane.io/model-version"] = version
    return f"{namespace}/{name}", {"metadata": {"name": name, "namespace": namespace, "labels": labels}}


def endpoint(ip: str, pod_name: str, ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    return {
        "addresses": [ip],
        "conditions": {"ready": ready, "terminating": terminating},
        "targetRef": {"kind": "Pod", "name": pod_name},
    }


def slice_(
    endpoints: list[dict[str, Any]], deployment: str = "iris", namespace: str = "team"
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{deployment}-abc",
            "namespace": namespace,
            "labels": {"modelplane.io/deployment": deployment},
        },
        "ports": [{"name": "http", "port": 8000}, {"name": "grpc", "port": 8001}],
        "endpoints": endpoints,
    }


SPEC = {"model": {"name": "iris-model", "version": 3}, "traffic": {"canary": {"version": 4, "percent": 20}}}


def test_stable_and_canary_endpoints_with_weights_from_the_spec() -> None:
    deployments = dict([md("iris", SPEC)])
    pods = dict([pod("a", "stable", "3"), pod("b", "stable", "3"), pod("c", "canary", "4")])
    slices = {
        "team/iris-abc": slice_(
            [endpoint("127.10.0.1", "a"), endpoint("127.10.0.2", "b"), endpoint("127.10.0.3", "c")]
        )
    }
    route = build_routes(deployments, slices, pods)["team/iris"]
    assert [(b.version, b.weight, b.role) for b in route.backends] == [
        ("3", 80, "stable"),
        ("4", 20, "canary"),
    ]
    assert [e.http for e in route.endpoints["3"]] == ["http://127.10.0.1:8000", "http://127.10.0.2:8000"]
    assert route.endpoints["4"][0].grpc == "127.10.0.3:8001"
    assert route.backend_model == "iris-model"
    assert not route.scaled_to_zero


def test_unready_and_terminating_endpoints_are_not_routed() -> None:
    deployments = dict([md("iris", {"model": {"name": "iris", "version": 3}})])
    pods = dict([pod("a", "stable", "3"), pod("b", "stable", "3"), pod("c", "stable", "3")])
    slices = {
        "s": slice_(
            [
                endpoint("127.10.0.1", "a", ready=False),
                endpoint("127.10.0.2", "b", terminating=True),
                endpoint("127.10.0.3", "c"),
            ]
        )
    }
    route = build_routes(deployments, slices, pods)["team/iris"]
    assert [e.http for e in route.endpoints["3"]] == ["http://127.10.0.3:8000"]


def test_canary_without_ready_pods_takes_no_traffic() -> None:
    deployments = dict([md("iris", SPEC)])
    pods = dict([pod("a", "stable", "3")])
    route = build_routes(deployments, {"s": slice_([endpoint("127.10.0.1", "a")])}, pods)["team/iris"]
    assert [(b.version, b.weight) for b in route.backends] == [("3", 100)]


def test_scaled_to_zero_model_is_routable_for_activation_and_other_namespaces_do_not_mix() -> None:
    deployments = dict(
        [md("iris", {"model": {"name": "iris", "version": 3}, "autoscaling": {"minReplicas": 0}})]
    )
    other_ns = {"x": slice_([endpoint("127.10.0.9", "z")], namespace="other")}
    pods = dict([pod("z", "stable", "3", namespace="other")])
    route = build_routes(deployments, other_ns, pods)["team/iris"]
    assert route.scaled_to_zero
    assert not route.ready()


def test_shadow_pods_receive_copies_only() -> None:
    spec = {"model": {"name": "iris", "version": 3}, "traffic": {"shadow": {"version": 5, "percent": 100}}}
    pods = dict([pod("a", "stable", "3"), pod("s", "shadow", "5")])
    route = build_routes(
        dict([md("iris", spec)]),
        {"s": slice_([endpoint("127.10.0.1", "a"), endpoint("127.10.0.5", "s")])},
        pods,
    )["team/iris"]
    assert [(b.version, b.weight) for b in route.backends] == [("3", 100)]
    assert route.shadow is not None
    assert (route.shadow.version, route.shadow.weight) == ("5", 100)
    assert [e.http for e in route.endpoints["5"]] == ["http://127.10.0.5:8000"]
