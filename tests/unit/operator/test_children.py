"""The children a ModelDeployment renders: what the scheduler, kubelet and router will act on."""

from __future__ import annotations

from typing import Any

from modelplane.api.labels import DEPLOYMENT_LABEL, ROLE_LABEL
from modelplane.api.v1alpha1 import ModelDeploymentSpec
from modelplane.operator.children import OperatorSettings, Owner, desired_children, replicas_for
from modelplane.operator.gpus import PRODUCT_LABEL
from modelplane.resolution.resolver import ServedVersion

OWNER = Owner(name="iris", namespace="team-a", uid="1234-5678")
SETTINGS = OperatorSettings()
STABLE = ServedVersion("stable", "iris", 3, "http://registry/api/v1/artifacts/abc", "a" * 64, "name: 'iris'")
CANARY = ServedVersion("canary", "iris", 4, "http://registry/api/v1/artifacts/def", "b" * 64, "name: 'iris'")


def spec(**fields: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({"model": {"name": "iris", "version": 3}, **fields})


def by_kind(children: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for child in children:
        found.setdefault(child["kind"], []).append(child)
    return found


def pod_spec(children: list[dict[str, Any]], index: int = 0) -> dict[str, Any]:
    spec_: dict[str, Any] = by_kind(children)["Deployment"][index]["spec"]["template"]["spec"]
    return spec_


def test_one_deployment_service_and_pdb_all_owned_and_labelled() -> None:
    children = desired_children(OWNER, spec(), STABLE, None, SETTINGS)
    kinds = by_kind(children)
    assert sorted(kinds) == ["Deployment", "PodDisruptionBudget", "Service"]
    assert all(len(items) == 1 for items in kinds.values())
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "modelplane.io/v1alpha1",
                "kind": "ModelDeployment",
                "name": "iris",
                "uid": "1234-5678",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["app.kubernetes.io/instance"] == "iris"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "modelplane"


def test_rendering_is_deterministic() -> None:
    assert desired_children(OWNER, spec(), STABLE, [CANARY], SETTINGS) == desired_children(
        OWNER, spec(), STABLE, [CANARY], SETTINGS
    )


def test_pods_request_gpus_tolerate_the_taint_and_prefer_types_in_order() -> None:
    children = desired_children(
        OWNER, spec(resources={"gpu": {"count": 2, "types": ["H100", "A100"]}}), STABLE, None, SETTINGS
    )
    pod = pod_spec(children)
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    node = pod["affinity"]["nodeAffinity"]
    required = node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchExpressions"
    ][0]
    assert required["key"] == PRODUCT_LABEL
    assert "NVIDIA-H100-80GB-HBM3" in required["values"]
    assert "NVIDIA-A100-SXM4-80GB" in required["values"]
    preferred = node["preferredDuringSchedulingIgnoredDuringExecution"]
    weights = {p["preference"]["matchExpressions"][0]["values"][0]: p["weight"] for p in preferred}
    assert weights["NVIDIA-H100-80GB-HBM3"] > weights["NVIDIA-A100-SXM4-80GB"] > 0


def test_exact_product_labels_pass_through_and_no_types_means_no_affinity() -> None:
    pod = pod_spec(
        desired_children(OWNER, spec(resources={"gpu": {"types": ["NVIDIA-B200"]}}), STABLE, None, SETTINGS)
    )
    values = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]
    assert values["matchExpressions"][0]["values"] == ["NVIDIA-B200"]
    assert "affinity" not in pod_spec(desired_children(OWNER, spec(), STABLE, None, SETTINGS))


def test_user_affinity_terms_are_combined_with_the_gpu_requirement() -> None:
    user = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        },
        "podAntiAffinity": {"x": 1},
    }
    pod = pod_spec(
        desired_children(
            OWNER,
            spec(resources={"gpu": {"types": ["A100"]}}, scheduling={"affinity": user}),
            STABLE,
            None,
            SETTINGS,
        )
    )
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]
    assert [e["key"] for e in term["matchExpressions"]] == ["zone", PRODUCT_LABEL]
    assert pod["affinity"]["podAntiAffinity"] == {"x": 1}


def test_mig_profile_requests_mig_slices_not_whole_gpus() -> None:
    limits = pod_spec(
        desired_children(
            OWNER, spec(resources={"gpu": {"count": 1, "migProfile": "1g.10gb"}}), STABLE, None, SETTINGS
        )
    )["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/mig-1g.10gb": 1}


def test_cpu_only_deployment_has_no_gpu_request_or_toleration() -> None:
    pod = pod_spec(
        desired_children(OWNER, spec(resources={"gpu": {"count": 0}, "cpu": "2"}), STABLE, None, SETTINGS)
    )
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}
    assert pod["tolerations"] == []


def test_restricted_security_context_and_writable_paths_only_on_empty_dirs() -> None:
    pod = pod_spec(desired_children(OWNER, spec(), STABLE, None, SETTINGS))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod["initContainers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        mounted = {m["name"] for m in container["volumeMounts"]}
        assert mounted <= {v["name"] for v in pod["volumes"] if "emptyDir" in v}


def test_runtime_listens_on_the_pod_ip_with_v2_probes_and_drains_within_the_grace_period() -> None:
    pod = pod_spec(desired_children(OWNER, spec(), STABLE, None, SETTINGS))
    runtime = pod["containers"][0]
    assert runtime["command"] == ["modelplane", "runtime"]
    args = runtime["args"]
    assert args[args.index("--host") + 1] == "$(POD_IP)"
    env = {e["name"]: e for e in runtime["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert runtime["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert runtime["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    drain = float(args[args.index("--drain-timeout") + 1])
    lame_duck = float(args[args.index("--drain-delay") + 1])
    assert lame_duck > 0  # stale endpoints during a rollout still get answers
    assert pod["terminationGracePeriodSeconds"] > lame_duck + drain
    init = pod["initContainers"][0]
    assert init["command"] == ["modelplane", "prepare-model"]
    assert {e["name"]: e.get("value") for e in init["env"]}["MODELPLANE_MODEL_CONFIG"] == STABLE.config_pbtxt


def test_rollouts_never_drop_below_desired_ready_pods() -> None:
    deployment = by_kind(desired_children(OWNER, spec(), STABLE, None, SETTINGS))["Deployment"][0]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_canary_gets_its_own_deployment_share_and_stable_selector_stays_fixed() -> None:
    s = spec(replicas=4, traffic={"canary": {"version": 4, "percent": 25}})
    stable, canary = by_kind(desired_children(OWNER, s, STABLE, [CANARY], SETTINGS))["Deployment"]
    assert stable["metadata"]["name"] == "iris"
    assert canary["metadata"]["name"] == "iris-canary"
    assert stable["spec"]["selector"]["matchLabels"] == {DEPLOYMENT_LABEL: "iris", ROLE_LABEL: "stable"}
    assert canary["spec"]["selector"]["matchLabels"] == {DEPLOYMENT_LABEL: "iris", ROLE_LABEL: "canary"}
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (4, 1)
    assert canary["spec"]["template"]["metadata"]["labels"]["modelplane.io/model-version"] == "4"


def test_replica_counts_follow_spec_replicas_or_min_and_canary_at_least_one() -> None:
    assert replicas_for(spec(), "stable") == 1
    # Autoscaled: spec.replicas (default 1) is kept within the bounds; without autoscaling it rules.
    assert replicas_for(spec(autoscaling={"minReplicas": 3, "maxReplicas": 5}), "stable") == 3
    assert replicas_for(spec(replicas=9, autoscaling={"maxReplicas": 5}), "stable") == 5
    assert replicas_for(spec(replicas=9, autoscaling={"mode": "none", "maxReplicas": 5}), "stable") == 9
    assert replicas_for(spec(replicas=0, autoscaling={"minReplicas": 0}), "stable") == 0
    assert replicas_for(spec(replicas=3, traffic={"canary": {"version": 4, "percent": 1}}), "canary") == 1
    assert (
        replicas_for(
            spec(
                replicas=0, autoscaling={"minReplicas": 0}, traffic={"canary": {"version": 4, "percent": 50}}
            ),
            "canary",
        )
        == 0
    )
    assert replicas_for(spec(replicas=3, traffic={"canary": {"version": 4, "percent": 0}}), "canary") == 0


def test_hpa_mode_renders_an_hpa_on_the_scale_subresource_and_other_modes_do_not() -> None:
    hpa_spec = spec(autoscaling={"mode": "hpa", "minReplicas": 0, "maxReplicas": 6, "targetConcurrency": 3})
    hpas = by_kind(desired_children(OWNER, hpa_spec, STABLE, None, SETTINGS))["HorizontalPodAutoscaler"]
    assert len(hpas) == 1
    hpa = hpas[0]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": "iris",
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 6)
    assert hpa["metrics"][0]["pods"]["target"] == {"type": "AverageValue", "averageValue": "3"}
    for mode in ("builtin", "none"):
        kinds = by_kind(desired_children(OWNER, spec(autoscaling={"mode": mode}), STABLE, None, SETTINGS))
        assert "HorizontalPodAutoscaler" not in kinds


def test_torch_threads_follow_the_cpu_limit_unless_the_user_sets_them() -> None:
    limited = pod_spec(desired_children(OWNER, spec(resources={"cpu": "1500m"}), STABLE, None, SETTINGS))
    runtime = limited["containers"][0]
    env = {e["name"]: e for e in runtime["env"]}
    assert runtime["resources"]["limits"]["cpu"] == "1500m"
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        assert env[name]["valueFrom"] == {
            "resourceFieldRef": {"containerName": "runtime", "resource": "limits.cpu", "divisor": "1"}
        }
    # Without a CPU limit the runtime keeps torch's default (the node's cores).
    unlimited = pod_spec(desired_children(OWNER, spec(), STABLE, None, SETTINGS))
    assert "OMP_NUM_THREADS" not in {e["name"] for e in unlimited["containers"][0]["env"]}
    # A user's own setting wins and is not duplicated.
    own = spec(resources={"cpu": "4"}, runtime={"env": [{"name": "OMP_NUM_THREADS", "value": "2"}]})
    names = [
        e["name"]
        for e in pod_spec(desired_children(OWNER, own, STABLE, None, SETTINGS))["containers"][0]["env"]
    ]
    assert names.count("OMP_NUM_THREADS") == 1
    assert "MKL_NUM_THREADS" not in names


LLM = ServedVersion(
    "stable",
    "chat",
    2,
    "http://registry/api/v1/models/chat/versions/2/files",
    "c" * 64,
    "",
    kind="generative",
)


def _generative(children: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    deployment = by_kind(children)["Deployment"][0]
    pod = deployment["spec"]["template"]
    (init,) = pod["spec"]["initContainers"]
    (runtime,) = pod["spec"]["containers"]
    return pod, init, runtime


def test_a_language_model_downloads_its_directory_then_runs_the_generative_engine() -> None:
    md = spec(
        batching={"maxBatchSize": 48},
        llm={"maxModelLen": 4096, "dtype": "bfloat16", "kvCacheBytes": "512Mi", "enablePrefixCaching": False},
        resources={"gpu": {"count": 1}},
    )
    pod, init, runtime = _generative(desired_children(OWNER, md, LLM, None, SETTINGS))
    assert init["args"][-4:] == [
        "--manifest-url",
        "http://registry/api/v1/models/chat/versions/2/files",
        "--digest",
        "sha256:" + "c" * 64,
    ]
    assert runtime["command"] == ["modelplane", "llm-runtime"]
    args = runtime["args"]
    assert args[0] == "/models/chat/2"
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    assert flags["--served-model-name"] == "chat"
    assert flags["--max-num-seqs"] == "48"  # spec.batching is the engine's batch
    assert flags["--dtype"] == "bfloat16"
    assert flags["--max-model-len"] == "4096"
    assert flags["--kv-cache-bytes"] == str(512 * 1024 * 1024)
    assert "--no-enable-prefix-caching" in args
    assert not any(e["name"] == "MODELPLANE_MODEL_CONFIG" for e in runtime["env"])
    assert [p["name"] for p in runtime["ports"]] == ["http"]
    assert runtime["readinessProbe"]["httpGet"]["path"] == "/health"
    assert pod["metadata"]["labels"]["modelplane.io/api"] == "openai"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8000"
    assert runtime["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_runtime_vllm_renders_vllms_openai_server_with_the_same_settings() -> None:
    md = spec(runtime={"name": "vllm"}, batching={"maxBatchSize": 16}, llm={"kvCacheMemoryFraction": 0.8})
    _, init, runtime = _generative(desired_children(OWNER, md, LLM, None, SETTINGS))
    assert runtime["image"] == SETTINGS.vllm_image
    assert init["image"] == SETTINGS.runtime_image  # the download is ours, whatever serves
    assert runtime["command"] == ["vllm", "serve"]
    args = runtime["args"]
    assert args[:5] == ["/models/chat/2", "--host", "0.0.0.0", "--port", "8000"]
    flags = dict(zip(args[5::2], args[6::2], strict=False))
    assert flags == {
        "--served-model-name": "chat",
        "--max-num-seqs": "16",
        "--max-num-batched-tokens": "2048",
        "--dtype": "auto",
        "--gpu-memory-utilization": "0.8",
    }
    assert runtime["livenessProbe"]["httpGet"]["path"] == "/health"


def test_a_tensor_models_environment_keeps_its_order() -> None:
    # A list in a different order is a change: upgrading the operator must not roll every pod.
    (runtime,) = pod_spec(desired_children(OWNER, spec(), STABLE, None, SETTINGS))["containers"]
    names = [e["name"] for e in runtime["env"]]
    assert names[:5] == ["POD_IP", "POD_NAME", "POD_NAMESPACE", "MODELPLANE_MODEL_CONFIG", "HOME"]
    assert names[5] == "MODELPLANE_ARTIFACT_TOKEN"
