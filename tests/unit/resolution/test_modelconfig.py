"""The runtime configuration written from a registry signature parses back as Triton reads it."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from modelplane.resolution.modelconfig import SignatureError, Tensor, model_config

INPUTS = [Tensor("INPUT__0", "FP32", (-1, 64))]
OUTPUTS = [Tensor("OUTPUT__0", "FP32", (-1, 10))]


def _parse(text: str) -> pb.ModelConfig:
    return text_format.Parse(text, pb.ModelConfig())


def test_batched_signature_drops_the_batch_dim_and_enables_dynamic_batching() -> None:
    config = _parse(
        model_config(
            "iris",
            INPUTS,
            OUTPUTS,
            max_batch_size=16,
            max_latency_ms=2.5,
            gpus=1,
            artifact_uri="http://r/a",
            sha256="c" * 64,
            version=3,
        )
    )
    assert config.platform == "pytorch_libtorch"
    assert config.max_batch_size == 16
    assert list(config.input[0].dims) == [64]
    assert config.input[0].data_type == pb.TYPE_FP32
    assert config.dynamic_batching.max_queue_delay_microseconds == 2500
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_AUTO
    assert list(config.version_policy.specific.versions) == [3]
    assert config.parameters["artifact_uri"].string_value == "http://r/a"
    assert config.parameters["artifact_sha256"].string_value == "c" * 64


def test_fixed_shape_signature_serves_without_batching_on_cpu() -> None:
    config = _parse(
        model_config(
            "m",
            [Tensor("x", "INT64", (3, 4))],
            [Tensor("y", "BYTES", (3,))],
            max_batch_size=16,
            max_latency_ms=1,
            gpus=0,
            artifact_uri="file:///m.pt",
            sha256=None,
            version=1,
        )
    )
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [3, 4]
    assert config.output[0].data_type == pb.TYPE_STRING
    assert not config.HasField("dynamic_batching")
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert "artifact_sha256" not in config.parameters


def test_missing_signature_or_unknown_type_says_what_to_fix() -> None:
    with pytest.raises(SignatureError, match="no input/output signature"):
        model_config(
            "m",
            [],
            OUTPUTS,
            max_batch_size=1,
            max_latency_ms=1,
            gpus=0,
            artifact_uri="x",
            sha256=None,
            version=1,
        )
    with pytest.raises(SignatureError, match="unsupported tensor datatype"):
        model_config(
            "m",
            [Tensor("x", "FP8", (-1, 2))],
            OUTPUTS,
            max_batch_size=1,
            max_latency_ms=1,
            gpus=0,
            artifact_uri="x",
            sha256=None,
            version=1,
        )


def test_a_torch_export_artifact_is_named_so_the_runtime_loads_it_as_one() -> None:
    from modelplane.resolution.registry import model_filename

    def config(model_filename: str | None) -> pb.ModelConfig:
        text = model_config(
            "iris",
            INPUTS,
            OUTPUTS,
            max_batch_size=8,
            max_latency_ms=1.0,
            gpus=0,
            artifact_uri="http://r/a",
            sha256=None,
            version=1,
            model_filename=model_filename,
        )
        return _parse(text)

    assert config("model.pt2").default_model_filename == "model.pt2"
    assert config(None).default_model_filename == ""
    assert model_filename("exported.PT2") == "model.pt2"
    assert model_filename("model.pt") is None
    assert model_filename("weights.pth") is None
