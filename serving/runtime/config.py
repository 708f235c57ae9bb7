"""Triton ``config.pbtxt`` -> :class:`ModelSpec`, the runtime's own view of a model's contract.

Parsed with the ``ModelConfig`` protobuf that ``tritonclient`` ships, so any file Triton accepts for
the PyTorch backend parses the same way here. Only the fields the runtime honours are carried over;
settings Triton has no field for (precision, warm-up, threads, artifact URL) come from the config's
``parameters`` map, as Triton's own backends do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from modelplane.serving.runtime.datatypes import NUMPY_DTYPES, config_type_to_v2

SUPPORTED_PLATFORMS = ("pytorch_libtorch", "pytorch", "torch")
PRECISIONS = ("fp32", "fp16", "bf16")


class ConfigError(ValueError):
    """A ``config.pbtxt`` the runtime cannot serve; the message names the file's problem."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: V2 datatype and dims (without the batch dim; -1 = any size)."""

    name: str
    datatype: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ModelSpec:
    """What the runtime needs to know about one model, independent of its version."""

    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: ``None`` when the config has no ``dynamic_batching`` block (each request runs on its own).
    max_queue_delay_us: int | None = None
    device_kind: str = "AUTO"  # AUTO, GPU or CPU, from instance_group
    instance_count: int = 1
    precision: str = "fp32"
    warmup: bool = True
    intra_op_threads: int | None = None
    #: Run batches whose forward takes less than this on the event loop (0: always in a thread); a
    #: thread hand-off costs about as much as a tiny model's whole forward.
    inline_below_us: int = 250
    #: "adaptive": wait for a batch only while other clients are likely to join (the default);
    #: "full": always wait up to the queue delay for a full batch, as Triton's dynamic batcher does.
    batch_wait: str = "adaptive"
    artifact_uri: str | None = None
    artifact_sha256: str | None = None
    #: ``module.path:ClassName`` for state_dict artifacts (``model.pth``), built with no arguments.
    module_class: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    #: ("latest", (n,)), ("all", ()) or ("specific", (v, ...)): Triton's version_policy.
    version_policy: tuple[str, tuple[int, ...]] = ("latest", (1,))
    default_model_filename: str | None = None
    #: The parsed ModelConfig itself, for the model configuration endpoints.
    config: Any = field(default=None, compare=False, repr=False)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0 and self.max_queue_delay_us is not None

    def input_shape(self, spec: TensorSpec) -> tuple[int, ...]:
        """The full request shape pattern, batch dim (-1) first when the model batches."""
        return (-1, *spec.dims) if self.max_batch_size > 0 else spec.dims


def parse_config(text: str, default_name: str) -> ModelSpec:
    """Parse config.pbtxt text; ``default_name`` (the folder name) applies when ``name`` is empty."""
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigError(f"config.pbtxt is not a valid ModelConfig: {exc}") from exc
    return spec_from_config(config, default_name)


def spec_from_config(config: model_config_pb2.ModelConfig, default_name: str) -> ModelSpec:
    """Validate a parsed ModelConfig and reduce it to a :class:`ModelSpec`."""
    name = config.name or default_name
    if config.name and config.name != default_name:
        raise ConfigError(f"config.pbtxt names the model {config.name!r} but its folder is {default_name!r}")
    platform = config.platform or config.backend or "pytorch_libtorch"
    if platform not in SUPPORTED_PLATFORMS:
        raise ConfigError(
            f"model {name!r}: platform {platform!r} is not served by this runtime "
            f"(use one of {', '.join(SUPPORTED_PLATFORMS)})"
        )
    if config.max_batch_size < 0:
        raise ConfigError(f"model {name!r}: max_batch_size must be >= 0, got {config.max_batch_size}")
    inputs = tuple(_tensor(name, "input", t) for t in config.input)
    outputs = tuple(_tensor(name, "output", t) for t in config.output)
    if not inputs:
        raise ConfigError(f"model {name!r}: config.pbtxt declares no input")
    if not outputs:
        raise ConfigError(f"model {name!r}: config.pbtxt declares no output")
    for kind, group in (("input", inputs), ("output", outputs)):
        names = [t.name for t in group]
        if len(set(names)) != len(names):
            raise ConfigError(f"model {name!r}: duplicate {kind} names in {names}")

    params = {key: value.string_value for key, value in config.parameters.items()}
    delay = (
        int(config.dynamic_batching.max_queue_delay_microseconds)
        if config.HasField("dynamic_batching")
        else None
    )
    device_kind, instances = _instance_group(name, config)
    precision = params.get("precision", "fp32").lower()
    if precision not in PRECISIONS:
        raise ConfigError(
            f"model {name!r}: parameter precision must be one of {PRECISIONS}, got {precision!r}"
        )
    threads = params.get("intra_op_threads")
    return ModelSpec(
        name=name,
        platform=platform,
        max_batch_size=int(config.max_batch_size),
        inputs=inputs,
        outputs=outputs,
        max_queue_delay_us=delay,
        device_kind=device_kind,
        instance_count=instances,
        precision=precision,
        warmup=params.get("warmup", "true").lower() not in ("false", "0", "no"),
        intra_op_threads=_positive_int(name, "intra_op_threads", threads) if threads else None,
        inline_below_us=_non_negative_int(name, "inline_below_us", params.get("inline_below_us", "250")),
        batch_wait=_batch_wait(name, params.get("batch_wait", "adaptive")),
        artifact_uri=params.get("artifact_uri") or None,
        artifact_sha256=(params.get("artifact_sha256") or "").lower() or None,
        module_class=params.get("module_class") or None,
        parameters=params,
        version_policy=_version_policy(name, config),
        default_model_filename=config.default_model_filename or None,
        config=config,
    )


def _tensor(model: str, kind: str, tensor: model_config_pb2.ModelInput) -> TensorSpec:
    type_name = model_config_pb2.DataType.Name(tensor.data_type)
    datatype = config_type_to_v2(type_name)
    if not tensor.name:
        raise ConfigError(f"model {model!r}: an {kind} has no name")
    if datatype not in NUMPY_DTYPES:
        raise ConfigError(
            f"model {model!r}: {kind} {tensor.name!r} has data_type {type_name}, which torch models "
            "cannot take; use a numeric or boolean type"
        )
    dims = tuple(int(d) for d in tensor.dims)
    if any(d < -1 or d == 0 for d in dims):
        raise ConfigError(f"model {model!r}: {kind} {tensor.name!r} has invalid dims {list(dims)}")
    return TensorSpec(name=tensor.name, datatype=datatype, dims=dims)


def _instance_group(model: str, config: model_config_pb2.ModelConfig) -> tuple[str, int]:
    kinds = model_config_pb2.ModelInstanceGroup.Kind
    if not config.instance_group:
        return "AUTO", 1
    group = config.instance_group[0]
    kind = {kinds.Value("KIND_GPU"): "GPU", kinds.Value("KIND_CPU"): "CPU"}.get(group.kind, "AUTO")
    return kind, max(1, int(group.count or 1))


def _version_policy(model: str, config: model_config_pb2.ModelConfig) -> tuple[str, tuple[int, ...]]:
    if not config.HasField("version_policy"):
        return ("latest", (1,))
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return ("all", ())
    if which == "specific":
        return ("specific", tuple(int(v) for v in policy.specific.versions))
    count = int(policy.latest.num_versions)
    if count < 1:
        raise ConfigError(f"model {model!r}: version_policy latest needs num_versions >= 1")
    return ("latest", (count,))


BATCH_WAITS = ("adaptive", "full")


def _batch_wait(model: str, value: str) -> str:
    if value not in BATCH_WAITS:
        raise ConfigError(
            f"model {model!r}: parameter batch_wait must be one of {', '.join(BATCH_WAITS)}, got {value!r}"
        )
    return value


def _non_negative_int(model: str, key: str, value: str) -> int:
    if not value.isdigit():
        raise ConfigError(f"model {model!r}: parameter {key} must be a non-negative integer, got {value!r}")
    return int(value)


def _positive_int(model: str, key: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"model {model!r}: parameter {key} must be a positive integer, got {value!r}")
    return number
