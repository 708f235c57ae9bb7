"""The desired children of a ModelDeployment, computed from its spec alone (no I/O).

The operator applies what these functions return with server-side apply, so running them twice, or
after a crash half way, converges to the same objects. Every child carries an owner reference to
its ModelDeployment (deleting it deletes them) and the ``app.kubernetes.io/*`` labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from modelplane import __version__
from modelplane.api import v1alpha1 as api
from modelplane.api.labels import API_LABEL, API_OPENAI, DEPLOYMENT_LABEL, ROLE_LABEL, VERSION_LABEL, Role
from modelplane.api.metrics import RUNTIME_IN_FLIGHT
from modelplane.operator.gpus import GPU_RESOURCE, GPU_TAINT_KEY, gpu_node_affinity
from modelplane.resolution.resolver import ServedVersion

Manifest = dict[str, Any]

FIELD_MANAGER = "modelplane-operator"
ARTIFACT_TOKEN_SECRET = "modelplane-artifact-token"  # noqa: S105 (a Secret's name)

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
MODEL_REPOSITORY = "/models"


@dataclass(frozen=True)
class OperatorSettings:
    """Cluster-wide choices of the installation (from the operator's flags / the Helm values)."""

    runtime_image: str = f"ghcr.io/modelplane/runtime:{__version__}"
    triton_image: str = "nvcr.io/nvidia/tritonserver:24.08-py3"
    vllm_image: str = "vllm/vllm-openai:v0.11.0"  # runtime.name vllm: its OpenAI server
    #: Secret (key ``token``) in each model namespace that serving pods download artifacts with;
    #: None: no token (a registry that lets anyone read). The chart's default too.
    artifact_token_secret: str | None = ARTIFACT_TOKEN_SECRET
    drain_seconds: int = 30  # how long in-flight requests may take once a pod refuses new ones
    #: After SIGTERM a serving pod reports not ready but keeps answering this long, so requests
    #: sent on stale endpoints during a rollout or scale-down still succeed.
    drain_delay_seconds: int = 5
    cluster_domain: str = "cluster.local"
    extra_labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment that owns the children."""

    name: str
    namespace: str
    uid: str


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def common_labels(owner: Owner, settings: OperatorSettings) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelplane-model",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": "predictor",
        "app.kubernetes.io/part-of": "modelplane",
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
        DEPLOYMENT_LABEL: owner.name,
        **settings.extra_labels,
    }


def child_name(owner: Owner, role: Role) -> str:
    return owner.name if role == "stable" else f"{owner.name}-{role}"


def _metadata(owner: Owner, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(owner)],
    }


def replicas_for(spec: api.ModelDeploymentSpec, role: Role) -> int:
    """Replicas of a role: stable follows spec.replicas (the autoscaler's output, kept within the
    autoscaling bounds unless autoscaling is off); a canary or shadow gets its percent of that, at
    least one while its percent is above zero."""
    bounds = spec.autoscaling
    stable = spec.replicas
    if bounds.mode != "none":
        stable = min(max(stable, bounds.min_replicas), bounds.max_replicas)
    if role == "stable":
        return stable
    target = spec.traffic.canary if role == "canary" else spec.traffic.shadow
    if target is None or target.percent == 0 or stable == 0:
        return 0
    return max(1, math.ceil(stable * target.percent / 100))


def resources(spec: api.ModelDeploymentSpec) -> dict[str, Any]:
    """Requests and limits: GPUs (or MIG slices) as limits, cpu/memory as requests and limits."""
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    gpu = spec.resources.gpu
    if gpu.count > 0:
        resource = f"nvidia.com/mig-{gpu.mig_profile}" if gpu.mig_profile else GPU_RESOURCE
        limits[resource] = gpu.count
    for key in ("cpu", "memory"):
        value = getattr(spec.resources, key)
        if value is not None:
            requests[key] = str(value)
            limits[key] = str(value)
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


RESTRICTED_CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _env(spec: api.ModelDeploymentSpec, served: ServedVersion, settings: OperatorSettings) -> list[Manifest]:
    """The environment the init and serving containers share."""
    env: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "HOME", "value": "/tmp"},  # noqa: S108 (an emptyDir: the root filesystem is read-only)
    ]
    if served.config_pbtxt:
        env.insert(3, {"name": "MODELPLANE_MODEL_CONFIG", "value": served.config_pbtxt})
    if settings.artifact_token_secret:
        env.append(
            {
                "name": "MODELPLANE_ARTIFACT_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": settings.artifact_token_secret, "key": "token"}},
            }
        )
    if spec.resources.cpu is not None and not any(e.name in THREAD_ENV for e in spec.runtime.env):
        # A container sees every core of its node; torch would size its thread pool to them and be
        # throttled by the CPU limit. Size it to the limit instead (rounded up; users may override).
        cpu_limit = {
            "resourceFieldRef": {"containerName": "runtime", "resource": "limits.cpu", "divisor": "1"}
        }
        env.extend({"name": name, "valueFrom": cpu_limit} for name in THREAD_ENV)
    env.extend(e.model_dump(by_alias=True, exclude_none=True) for e in spec.runtime.env)
    return env


MOUNTS = [
    {"name": "model-repository", "mountPath": MODEL_REPOSITORY},
    {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
]


def _prepare_container(image: str, served: ServedVersion, env: list[Manifest], extra: list[str]) -> Manifest:
    """The init container that writes the model into the repository volume before serving starts."""
    return {
        "name": "prepare-model",
        "image": image,
        "command": ["modelplane", "prepare-model"],
        "args": [
            "--model-repository",
            MODEL_REPOSITORY,
            "--name",
            served.model_name,
            "--version",
            str(served.version or 1),
            *extra,
        ],
        "env": env,
        "volumeMounts": MOUNTS,
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        # A failed download leaves its last log lines as the termination message, which the
        # ModelDeployment's conditions quote (the kubelet keeps at most 80 lines / 2 KiB).
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def runtime_containers(
    spec: api.ModelDeploymentSpec, served: ServedVersion, settings: OperatorSettings
) -> tuple[list[Manifest], list[Manifest]]:
    """The init container that writes the model repository, and the serving container."""
    if served.kind == "generative":
        return generative_containers(spec, served, settings)
    env = _env(spec, served, settings)
    image = spec.runtime.image or settings.runtime_image
    # The init container writes MODELPLANE_MODEL_CONFIG as NAME/config.pbtxt (with the artifact's
    # URI and sha256 as parameters) and fetches the artifact into the cache the runtime reads.
    init = _prepare_container(image, served, env, [])
    args = [
        "--model-repository",
        MODEL_REPOSITORY,
        "--host",
        "$(POD_IP)",
        "--http-port",
        str(HTTP_PORT),
        "--grpc-port",
        str(GRPC_PORT),
        "--metrics-port",
        str(METRICS_PORT),
        "--drain-timeout",
        str(settings.drain_seconds),
        "--drain-delay",
        str(settings.drain_delay_seconds),
        *spec.runtime.args,
    ]
    container: Manifest = {
        "name": "runtime",
        "image": image,
        "command": ["modelplane", "runtime"],
        "args": args,
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": resources(spec),
        "startupProbe": _probe("/v2/health/ready", period=2, failures=300),
        "readinessProbe": _probe("/v2/health/ready", period=2, failures=2),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
        "volumeMounts": MOUNTS,
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return [init], [container]


def engine_args(spec: api.ModelDeploymentSpec, served: ServedVersion) -> list[str]:
    """The engine's flags, in vLLM's names (which ``modelplane llm-runtime`` shares)."""
    llm = spec.llm
    args = [
        "--served-model-name",
        served.model_name,
        "--max-num-seqs",
        str(spec.batching.max_batch_size),
        "--max-num-batched-tokens",
        str(llm.max_num_batched_tokens),
        "--dtype",
        llm.dtype,
        "--gpu-memory-utilization",
        f"{llm.kv_cache_memory_fraction:g}",
    ]
    if llm.max_model_len is not None:
        args += ["--max-model-len", str(llm.max_model_len)]
    if not llm.enable_prefix_caching:
        args.append("--no-enable-prefix-caching")
    return args


def generative_containers(
    spec: api.ModelDeploymentSpec, served: ServedVersion, settings: OperatorSettings
) -> tuple[list[Manifest], list[Manifest]]:
    """A causal language model: the init container downloads its directory (every file checked
    against the registry's list, whose digest is ``served.sha256``), then the generative engine
    (``modelplane llm-runtime``) or vLLM's OpenAI server serves it on the HTTP port."""
    env = _env(spec, served, settings)
    model_dir = f"{MODEL_REPOSITORY}/{served.model_name}/{served.version or 1}"
    fetch = ["--manifest-url", served.artifact_uri, "--digest", f"sha256:{served.sha256}"]
    init = _prepare_container(settings.runtime_image, served, env, fetch)
    if spec.runtime.name == "vllm":
        image = spec.runtime.image or settings.vllm_image
        command = ["vllm", "serve", model_dir, "--host", "0.0.0.0", "--port", str(HTTP_PORT)]  # noqa: S104
        liveness = "/health"
    else:
        image = spec.runtime.image or settings.runtime_image
        command = ["modelplane", "llm-runtime", model_dir, "--host", "$(POD_IP)", "--port", str(HTTP_PORT)]
        liveness = "/v2/health/live"
        llm = spec.llm
        engine_only = ["--drain-timeout", str(settings.drain_seconds)]
        engine_only += ["--drain-delay", str(settings.drain_delay_seconds)]
        if llm.kv_cache_bytes is not None:
            engine_only += ["--kv-cache-bytes", str(quantity_bytes(llm.kv_cache_bytes))]
        if llm.quantization != "none":
            engine_only += ["--quantization", llm.quantization]
        command += engine_only
    container: Manifest = {
        "name": "runtime",
        "image": image,
        "command": command[:2],
        "args": [*command[2:], *engine_args(spec, served), *spec.runtime.args],
        "env": env,
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "resources": resources(spec),
        # Loading the weights may take minutes; readiness follows the engine from then on.
        "startupProbe": _probe("/health", period=2, failures=300),
        "readinessProbe": _probe("/health", period=2, failures=2),
        "livenessProbe": _probe(liveness, period=10, failures=3),
        "volumeMounts": MOUNTS,
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return [init], [container]


_QUANTITY_SUFFIXES = {
    "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
    "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
}  # fmt: skip


def quantity_bytes(quantity: str | int) -> int:
    """A byte size in Kubernetes' quantity notation (``512Mi``, ``2G``, ``1048576``) as bytes."""
    text = str(quantity)
    for suffix, factor in _QUANTITY_SUFFIXES.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))


def pod_labels(owner: Owner, served: ServedVersion, settings: OperatorSettings) -> dict[str, str]:
    labels = {**common_labels(owner, settings), ROLE_LABEL: served.role}
    if served.version is not None:
        labels[VERSION_LABEL] = str(served.version)
    if served.kind == "generative":
        labels[API_LABEL] = API_OPENAI  # the router speaks OpenAI's API to these pods
    return labels


def _affinity(spec: api.ModelDeploymentSpec) -> dict[str, Any] | None:
    user = dict(spec.scheduling.affinity or {})
    gpu = gpu_node_affinity(spec.resources.gpu.types) if spec.resources.gpu.count > 0 else None
    if gpu is None:
        return user or None
    node = dict(user.get("nodeAffinity") or {})
    required = node.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required:
        # Every user term must also satisfy the GPU requirement (terms are ORed, expressions ANDed).
        gpu_expressions = gpu["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
            "matchExpressions"
        ]
        terms = [
            {**term, "matchExpressions": [*term.get("matchExpressions", []), *gpu_expressions]}
            for term in required.get("nodeSelectorTerms", [])
        ]
        node["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}
    else:
        node["requiredDuringSchedulingIgnoredDuringExecution"] = gpu[
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
    node["preferredDuringSchedulingIgnoredDuringExecution"] = [
        *gpu["preferredDuringSchedulingIgnoredDuringExecution"],
        *node.get("preferredDuringSchedulingIgnoredDuringExecution", []),
    ]
    return {**user, "nodeAffinity": node}


def deployment(
    owner: Owner, spec: api.ModelDeploymentSpec, served: ServedVersion, settings: OperatorSettings
) -> Manifest:
    """The Deployment that runs one served version (stable or canary)."""
    labels = pod_labels(owner, served, settings)
    selector = {DEPLOYMENT_LABEL: owner.name, ROLE_LABEL: served.role}
    init, containers = runtime_containers(spec, served, settings)
    tolerations: list[dict[str, Any]] = []
    if spec.resources.gpu.count > 0:
        tolerations.append({"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"})
    tolerations += [t.model_dump(by_alias=True, exclude_none=True) for t in spec.scheduling.tolerations]
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.drain_delay_seconds + settings.drain_seconds + 15,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": init,
        "containers": containers,
        "volumes": [
            {"name": "model-repository", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
        ],
        "tolerations": tolerations,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
        ],
    }
    if affinity := _affinity(spec):
        pod_spec["affinity"] = affinity
    if spec.scheduling.node_selector:
        pod_spec["nodeSelector"] = dict(spec.scheduling.node_selector)
    if spec.scheduling.priority_class_name:
        pod_spec["priorityClassName"] = spec.scheduling.priority_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, child_name(owner, served.role), labels),
        "spec": {
            "replicas": replicas_for(spec, served.role),
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": spec.progress_deadline_seconds,
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(HTTP_PORT if served.kind == "generative" else METRICS_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def service(owner: Owner, settings: OperatorSettings) -> Manifest:
    """One Service in front of every serving pod of the deployment (all versions)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, owner.name, common_labels(owner, settings)),
        "spec": {
            "type": "ClusterIP",
            "selector": {DEPLOYMENT_LABEL: owner.name},
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def pod_disruption_budget(owner: Owner, settings: OperatorSettings) -> Manifest:
    """Voluntary evictions (node drains) leave at most one serving pod down at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, owner.name, common_labels(owner, settings)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {DEPLOYMENT_LABEL: owner.name}},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def horizontal_pod_autoscaler(
    owner: Owner, spec: api.ModelDeploymentSpec, settings: OperatorSettings
) -> Manifest:
    """For ``autoscaling.mode: hpa``: an HPA that scales the ModelDeployment itself (its scale
    subresource) on the runtimes' in-flight requests per pod, served by a metrics adapter such as
    Prometheus Adapter or KEDA. The HPA cannot go below one replica without the HPAScaleToZero
    feature gate, so a ``minReplicas`` of 0 becomes 1 here; use ``builtin`` to scale to zero."""
    bounds = spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner, owner.name, common_labels(owner, settings)),
        "spec": {
            "scaleTargetRef": {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": owner.name},
            "minReplicas": max(1, bounds.min_replicas),
            "maxReplicas": bounds.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": RUNTIME_IN_FLIGHT},
                        "target": {"type": "AverageValue", "averageValue": f"{bounds.target_concurrency:g}"},
                    },
                }
            ],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": bounds.scale_down_delay_seconds
                    + bounds.stable_window_seconds,
                },
            },
        },
    }


def service_url(owner: Owner, settings: OperatorSettings) -> str:
    """The in-cluster V2 HTTP base URL of the deployment's Service."""
    return f"http://{owner.name}.{owner.namespace}.svc.{settings.cluster_domain}:{HTTP_PORT}"


def desired_children(
    owner: Owner,
    spec: api.ModelDeploymentSpec,
    stable: ServedVersion,
    others: list[ServedVersion] | None,
    settings: OperatorSettings,
) -> list[Manifest]:
    """Everything the deployment should own right now, in apply order.

    ``others`` are the canary and shadow versions in force (each gets its own Deployment).
    """
    children = [deployment(owner, spec, stable, settings)]
    children += [deployment(owner, spec, served, settings) for served in others or []]
    children += [service(owner, settings), pod_disruption_budget(owner, settings)]
    if spec.autoscaling.mode == "hpa":
        children.append(horizontal_pod_autoscaler(owner, spec, settings))
    return children


def total_gpus(spec: api.ModelDeploymentSpec, replicas: int) -> int:
    """GPUs the given number of replicas request, for the status column."""
    return spec.resources.gpu.count * replicas
