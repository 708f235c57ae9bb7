"""The Triton model configuration (``config.pbtxt``) a served version runs with.

Written from the registry version's tensor signature and the deployment's batching settings, with
the artifact's URI and sha256 as configuration ``parameters``: the runtime downloads the artifact,
checks the digest and refuses anything else. The same text would configure NVIDIA's Triton server.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb


@dataclass(frozen=True)
class Tensor:
    """One input or output of the signature; ``shape`` includes the batch dimension (-1) if any."""

    name: str
    datatype: str  # V2 name: FP32, INT64, BYTES, ...
    shape: tuple[int, ...]


class SignatureError(ValueError):
    """The signature cannot be served; the message says what to change in the registry."""


def _data_type(datatype: str) -> int:
    name = "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"
    try:
        return int(pb.DataType.Value(name))
    except ValueError:
        raise SignatureError(f"unsupported tensor datatype {datatype!r}") from None


def batched(tensors: list[Tensor]) -> bool:
    """A signature batches when every tensor's first dimension is the dynamic batch dimension."""
    return bool(tensors) and all(t.shape and t.shape[0] == -1 for t in tensors)


def model_config(
    name: str,
    inputs: list[Tensor],
    outputs: list[Tensor],
    *,
    max_batch_size: int,
    max_latency_ms: float,
    gpus: int,
    artifact_uri: str,
    sha256: str | None,
    version: int,
    model_filename: str | None = None,
) -> str:
    """``config.pbtxt`` text for one model version; ``model_filename`` names the artifact's file
    (``model.pt2`` for a torch.export program), else the runtime takes it for TorchScript."""
    if not inputs or not outputs:
        raise SignatureError(
            f"model {name!r} version {version} has no input/output signature in the registry; "
            "register the version with `signature: {inputs: [...], outputs: [...]}`"
        )
    tensors = inputs + outputs
    batching = batched(tensors) and max_batch_size > 1
    config = pb.ModelConfig(
        name=name, platform="pytorch_libtorch", max_batch_size=max_batch_size if batching else 0
    )
    for tensor, target in [(t, config.input) for t in inputs] + [(t, config.output) for t in outputs]:
        entry = target.add()
        entry.name = tensor.name
        entry.data_type = _data_type(tensor.datatype)
        entry.dims.extend(tensor.shape[1:] if batching else tensor.shape)
    if batching:
        config.dynamic_batching.max_queue_delay_microseconds = int(max_latency_ms * 1000)
    group = config.instance_group.add()
    group.count = 1
    # With GPUs asked for, AUTO: CUDA when the device plugin made one visible (always, on a real
    # GPU node), so the same configuration also runs where GPUs are only simulated.
    group.kind = pb.ModelInstanceGroup.KIND_AUTO if gpus > 0 else pb.ModelInstanceGroup.KIND_CPU
    config.version_policy.specific.versions.append(version)
    if model_filename:
        config.default_model_filename = model_filename
    config.parameters["artifact_uri"].string_value = artifact_uri
    if sha256:
        config.parameters["artifact_sha256"].string_value = sha256
    return str(text_format.MessageToString(config))
