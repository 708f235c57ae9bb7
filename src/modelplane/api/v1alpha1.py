"""The ModelDeployment resource, ``modelplane.io/v1alpha1``: the single source of the CRD schema.

Everything a user can write in ``spec`` and everything the operator reports in ``status`` is
declared here once. ``modelplane crds generate`` turns these models into the CRD's OpenAPI schema
(defaults, enums, bounds, descriptions), and the cross-field rules below are emitted as CEL
``x-kubernetes-validations`` so the API server rejects a bad spec before the operator sees it. The
local stack validates the same YAML with these same models, so both paths agree; a unit test
evaluates every CEL rule against its Python twin.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

from modelplane.api.rules import Rule, check_rules

GROUP = "modelplane.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["md"]
CATEGORIES = ["modelplane"]

# Kubernetes' resource.Quantity grammar, as the built-in types publish it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# Registry model names: DNS-label-like, so they are also valid V2 model names and label values.
MODEL_NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
MIG_PROFILE_PATTERN = r"^[0-9]+g\.[0-9]+gb$"

Quantity = Annotated[
    Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)] | Annotated[int, Field(ge=0)],
    WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]
FreeFormObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


class ApiModel(BaseModel):
    """Base of every schema object: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> ApiModel:
        check_rules(self, self.rules)
        return self


TensorDatatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
]  # fmt: skip


class TensorSpec(ApiModel):
    """One input or output tensor, as in the V2 protocol's model metadata."""

    name: str = Field(min_length=1, max_length=128, description="Tensor name, e.g. `INPUT__0`.")
    datatype: TensorDatatype = Field(description="V2 datatype, e.g. `FP32`.")
    shape: list[Annotated[int, Field(ge=-1)]] = Field(
        max_length=16, description="Dimensions; -1 marks a dynamic one (a leading -1 is the batch)."
    )


class ModelSignature(ApiModel):
    """The tensors a model takes and returns; the runtime's model configuration is written from it."""

    inputs: list[TensorSpec] = Field(min_length=1, max_length=64)
    outputs: list[TensorSpec] = Field(min_length=1, max_length=64)


class ModelSource(ApiModel):
    """Which artifact to serve: a registry version or alias, or a direct storage URI."""

    version: int | None = Field(default=None, ge=1, description="Registry version number of the model.")
    alias: str | None = Field(
        default=None,
        pattern=ALIAS_PATTERN,
        max_length=63,
        description="Registry alias (for example `production`), resolved to a version by the operator.",
    )
    storage_uri: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^(https?|file)://",
        description="Direct artifact URI (`https://`, `http://` or `file://`), bypassing the registry.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="Expected sha256 of the artifact at `storageUri`; the runtime refuses any other bytes.",
    )
    signature: ModelSignature | None = Field(
        default=None,
        description="Tensor signature of the artifact at `storageUri` (registry versions carry their own); "
        "required with `storageUri`, since a TorchScript file does not record its tensors' names and shapes.",
    )

    rules = (
        Rule(
            cel="(has(self.version) ? 1 : 0) + (has(self.alias) ? 1 : 0) + (has(self.storageUri) ? 1 : 0)"
            " == 1",
            message="set exactly one of version, alias or storageUri",
            check=lambda s: sum(x is not None for x in (s.version, s.alias, s.storage_uri)) == 1,
        ),
        Rule(
            cel="!has(self.sha256) || has(self.storageUri)",
            message="sha256 applies only to storageUri (registry artifacts carry their own digest)",
            check=lambda s: s.sha256 is None or s.storage_uri is not None,
        ),
        Rule(
            cel="has(self.signature) == has(self.storageUri)",
            message="storageUri needs a signature, and only storageUri takes one "
            "(registry versions carry their own)",
            check=lambda s: (s.signature is None) == (s.storage_uri is None),
        ),
    )


class ModelSpec(ModelSource):
    """The model to serve; `name` is both its registry name and the name clients use in V2 requests."""

    name: str = Field(pattern=MODEL_NAME_PATTERN, max_length=63, description="Registry model name.")


class RuntimeSpec(ApiModel):
    """The serving runtime of the pods."""

    name: Literal["torch", "triton", "vllm"] = Field(
        default="torch",
        description="`torch`: Modelplane's runtimes (the V2 runtime for tensor models, the generative "
        "engine for causal language models). `triton`: an NVIDIA Triton Inference Server pod. `vllm`: "
        "vLLM's OpenAI server, for causal language models (GPU pods), with arguments from `llm` and "
        "`batching`.",
    )
    image: str | None = Field(
        default=None, max_length=512, description="Container image; the operator's default for the runtime."
    )
    args: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list, max_length=64, description="Extra arguments appended to the runtime's command."
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=128, description="Extra environment variables."
    )


class EnvVar(ApiModel):
    """An environment variable, as in a Pod's container spec."""

    name: str = Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=256)
    value: str | None = Field(default=None, max_length=32768)
    value_from: FreeFormObject | None = Field(
        default=None, description="A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, ...)."
    )

    rules = (
        Rule(
            cel="!(has(self.value) && has(self.valueFrom))",
            message="set value or valueFrom, not both",
            check=lambda s: not (s.value is not None and s.value_from is not None),
        ),
    )


RuntimeSpec.model_rebuild()


class GpuSpec(ApiModel):
    """GPUs per replica."""

    count: int = Field(default=1, ge=0, le=16, description="`nvidia.com/gpu` per replica (0 runs on CPU).")
    types: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list,
        max_length=8,
        description=(
            "Acceptable GPU products in order of preference: a family such as `H100` or `A100`, or an "
            "exact `nvidia.com/gpu.product` label value. Pods prefer the first and fall back to the rest."
        ),
    )
    mig_profile: str | None = Field(
        default=None,
        pattern=MIG_PROFILE_PATTERN,
        description="MIG profile such as `1g.10gb`: requests `nvidia.com/mig-<profile>`, not whole GPUs.",
    )

    rules = (
        Rule(
            cel="!has(self.migProfile) || self.count > 0",
            message="migProfile needs count > 0 (the number of MIG slices)",
            check=lambda s: s.mig_profile is None or s.count > 0,
        ),
    )


class ResourcesSpec(ApiModel):
    """Compute resources per replica."""

    gpu: GpuSpec = Field(default_factory=GpuSpec)
    cpu: Quantity | None = Field(default=None, description="CPU request and limit, e.g. `2` or `500m`.")
    memory: Quantity | None = Field(default=None, description="Memory request and limit, e.g. `8Gi`.")


class Toleration(ApiModel):
    """A taint toleration, as in a Pod's spec."""

    key: str | None = Field(default=None, max_length=317)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class SchedulingSpec(ApiModel):
    """Where the pods may run, beyond what the GPU request implies."""

    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods require.")
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description="Extra tolerations (the `nvidia.com/gpu` taint is tolerated when GPUs are asked for).",
    )
    affinity: FreeFormObject | None = Field(
        default=None, description="A Kubernetes Affinity, merged with the GPU-type preference."
    )
    priority_class_name: str | None = Field(
        default=None,
        max_length=253,
        description="PriorityClass of the pods (preemption order under pressure).",
    )


class AutoscalingSpec(ApiModel):
    """How replicas follow load (concurrency per replica), down to zero when `minReplicas` is 0."""

    mode: Literal["builtin", "hpa", "none"] = Field(
        default="builtin",
        description="`builtin`: Modelplane's concurrency autoscaler. `hpa`: render a "
        "HorizontalPodAutoscaler. `none`: replicas only change through `spec.replicas` / `kubectl scale`.",
    )
    min_replicas: int = Field(
        default=1, ge=0, le=1000, description="Fewest replicas; 0 allows scale to zero."
    )
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most replicas.")
    target_concurrency: float = Field(
        default=4.0, gt=0, le=10000, description="In-flight requests per replica."
    )
    stable_window_seconds: int = Field(
        default=60, ge=6, le=3600, description="Averaging window for steady load."
    )
    panic_window_seconds: int = Field(
        default=6, ge=1, le=600, description="Short window that reacts to bursts (panic mode)."
    )
    panic_threshold_percent: int = Field(
        default=200,
        ge=110,
        le=1000,
        description="Burst demand, in % of ready capacity, that starts panic mode.",
    )
    max_scale_up_rate: float = Field(
        default=10.0, gt=1, le=1000, description="At most this factor up per step."
    )
    max_scale_down_rate: float = Field(
        default=2.0, gt=1, le=1000, description="At most this factor down per step."
    )
    scale_down_delay_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="A lower recommendation must hold this long before scaling down.",
    )
    scale_to_zero_grace_period_seconds: int = Field(
        default=30, ge=0, le=3600, description="Time without any traffic before the last replica goes."
    )

    rules = (
        Rule(
            cel="self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            check=lambda s: s.min_replicas <= s.max_replicas,
        ),
        Rule(
            cel="self.panicWindowSeconds <= self.stableWindowSeconds",
            message="panicWindowSeconds must not exceed stableWindowSeconds",
            check=lambda s: s.panic_window_seconds <= s.stable_window_seconds,
        ),
    )


class BatchingSpec(ApiModel):
    """Dynamic batching in the runtime; for a causal language model, the engine's batch."""

    max_batch_size: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Largest batch the runtime assembles; for a causal language model, the sequences "
        "generated together (`max_num_seqs`).",
    )
    max_latency_ms: float = Field(
        default=5.0,
        ge=0,
        le=10000,
        description="Longest a request waits for a batch; it waits only while other clients are "
        "likely to join (a lone client never waits).",
    )


class LlmSpec(ApiModel):
    """The generative engine's settings, used when the version is a causal language model."""

    max_model_len: int | None = Field(
        default=None,
        ge=16,
        le=1048576,
        description="Prompt plus completion tokens; the model's own by default.",
    )
    max_num_batched_tokens: int = Field(
        default=2048,
        ge=16,
        le=1048576,
        description="Tokens computed in one engine step at most: prefill chunks, one per running sequence.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="`auto`: float32 on CPU, the checkpoint's dtype on a GPU."
    )
    kv_cache_memory_fraction: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="On a GPU, the share of the memory left after the weights for the KV cache.",
    )
    kv_cache_bytes: Quantity | None = Field(
        default=None, description="The KV cache's size, e.g. `512Mi` (on CPU the default is 256Mi)."
    )
    enable_prefix_caching: bool = Field(
        default=True, description="Share the KV cache of common prompt prefixes."
    )
    quantization: Literal["none", "int8"] = Field(
        default="none", description="`int8`: weight-only int8 linear layers (the built-in engine)."
    )


class TrafficTarget(ModelSource):
    """Another version of the same model that receives a share of the traffic."""

    percent: int = Field(ge=0, le=100, description="Share of requests, 0 to 100.")


class TrafficSpec(ApiModel):
    """Traffic between versions: a canary takes a share; a shadow gets copies, answered from stable."""

    canary: TrafficTarget | None = None
    shadow: TrafficTarget | None = None


class ModelDeploymentSpec(ApiModel):
    """What to serve, on what hardware, how it scales and how traffic splits."""

    model: ModelSpec
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    llm: LlmSpec = Field(default_factory=LlmSpec)
    traffic: TrafficSpec = Field(default_factory=TrafficSpec)
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Desired replicas of the stable version (the scale subresource's field, so it always "
        "has a value). With autoscaling `builtin` or `hpa` the autoscaler writes it and it is kept within "
        "`minReplicas`..`maxReplicas`; with `none` it is the replica count (`kubectl scale` sets it).",
    )
    progress_deadline_seconds: int = Field(
        default=600,
        ge=10,
        le=86400,
        description="Seconds a rollout or scale-up may go without progress (pods becoming ready) before "
        "`Progressing` turns False with reason `ProgressDeadlineExceeded` (the Deployments' "
        "`progressDeadlineSeconds`). Allow for downloading and loading the model.",
    )


ConditionType = Literal["ModelResolved", "Scheduled", "Available", "Progressing", "Ready"]


class Condition(ApiModel):
    """A Kubernetes-style condition; `lastTransitionTime` moves only when `status` flips."""

    type: str = Field(max_length=64)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(default="", max_length=128)
    message: str = Field(default="", max_length=32768)
    last_transition_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    observed_generation: int | None = None


class ResolvedModel(ApiModel):
    """The artifact a version resolved to."""

    name: str | None = None
    version: int | None = None
    alias: str | None = None
    storage_uri: str | None = None
    artifact_digest: str | None = None


class TrafficShare(ApiModel):
    """One version's share of traffic in force."""

    role: Literal["stable", "canary", "shadow"]
    version: int | None = None
    percent: int = Field(ge=0, le=100)


class RegistryRecord(ApiModel):
    """A registry version this deployment told the registry it serves (the registry's deployment
    record, which keeps that version from being deleted while it serves)."""

    model: str
    version: int


class AutoscalerStatus(ApiModel):
    """The autoscaler's last decision."""

    desired_replicas: int | None = None
    metric: str | None = None
    observed_concurrency: float | None = None
    observed_engine_waiting: float | None = Field(
        default=None, description="Generative models: sequences waiting in the pods' engines, last read."
    )
    last_scale_time: str | None = None
    last_scale_reason: str | None = None


class ModelDeploymentStatus(ApiModel):
    """What the operator observed; reported through the status subresource."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    observed_generation: int | None = None
    replicas: int = 0
    ready_replicas: int = 0
    ready: str | None = Field(default=None, description="`ready/desired`, for `kubectl get`.")
    selector: str | None = Field(default=None, description="Label selector of the pods (scale subresource).")
    gpus: int = Field(default=0, description="GPUs requested by the current replicas.")
    url: str | None = None
    model: ResolvedModel | None = None
    canary: ResolvedModel | None = None
    shadow: ResolvedModel | None = None
    traffic: list[TrafficShare] = Field(default_factory=list)
    autoscaler: AutoscalerStatus | None = None
    registry_records: list[RegistryRecord] = Field(
        default_factory=list,
        description="Registry versions reported to the registry as deployed here; removed on deletion.",
    )
    conditions: list[Condition] = Field(default_factory=list)


class ModelDeployment(BaseModel):
    """A whole ModelDeployment object, as read from YAML or the API."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    api_version: Literal["modelplane.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ModelDeployment"]
    metadata: dict[str, Any]
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None
