"""config.pbtxt parsing and repository layout rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelplane.serving.runtime.config import ConfigError, parse_config
from modelplane.serving.runtime.repository import list_models, model_dir, select_versions, valid_model_name
from modelplane.testing.runtime import mlp_config, two_input_config


def test_parses_a_triton_pytorch_config() -> None:
    spec = parse_config(mlp_config("mlp", max_batch_size=32, delay_us=250), "mlp")
    assert spec.name == "mlp"
    assert spec.platform == "pytorch_libtorch"
    assert spec.max_batch_size == 32
    assert [(t.name, t.datatype, t.dims) for t in spec.inputs] == [("INPUT__0", "FP32", (64,))]
    assert [(t.name, t.datatype, t.dims) for t in spec.outputs] == [("OUTPUT__0", "FP32", (10,))]
    assert spec.max_queue_delay_us == 250
    assert spec.batching
    assert spec.device_kind == "CPU"
    assert spec.input_shape(spec.inputs[0]) == (-1, 64)
    assert spec.version_policy == ("latest", (1,))


def test_variable_dims_and_int_types() -> None:
    spec = parse_config(two_input_config("two"), "two")
    assert [(t.name, t.datatype, t.dims) for t in spec.inputs] == [
        ("X", "FP32", (-1,)),
        ("SCALE", "INT64", (1,)),
    ]


def test_without_dynamic_batching_requests_run_alone() -> None:
    text = mlp_config("m").replace("dynamic_batching { max_queue_delay_microseconds: 500 }", "")
    spec = parse_config(text, "m")
    assert spec.max_queue_delay_us is None
    assert not spec.batching


def test_parameters_set_precision_warmup_threads_and_artifact() -> None:
    extra = """
parameters { key: "precision" value { string_value: "FP16" } }
parameters { key: "warmup" value { string_value: "false" } }
parameters { key: "intra_op_threads" value { string_value: "2" } }
parameters { key: "artifact_uri" value { string_value: "https://registry.example/a/model.pt" } }
parameters { key: "artifact_sha256" value { string_value: "ABCDEF" } }
version_policy { all {} }
"""
    spec = parse_config(mlp_config("m", extra=extra), "m")
    assert spec.precision == "fp16"
    assert spec.warmup is False
    assert spec.intra_op_threads == 2
    assert spec.artifact_uri == "https://registry.example/a/model.pt"
    assert spec.artifact_sha256 == "abcdef"
    assert spec.version_policy == ("all", ())


A_IN = 'input [ { name: "a" data_type: TYPE_FP32 dims: [1] } ]'
B_OUT = 'output [ { name: "b" data_type: TYPE_FP32 dims: [1] } ]'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("this is { not pbtxt", "not a valid ModelConfig"),
        ('name: "other" input [ { name: "a" data_type: TYPE_FP32 dims: [1] } ]', "its folder is 'm'"),
        ('platform: "tensorflow_savedmodel"', "not served by this runtime"),
        ('input [ { name: "a" data_type: TYPE_STRING dims: [1] } ] ' + B_OUT, "TYPE_STRING"),
        ('input [ { name: "a" data_type: TYPE_FP32 dims: [0] } ] ' + B_OUT, "invalid dims"),
        ('input [ { name: "a" data_type: TYPE_FP32 dims: [-2] } ] ' + B_OUT, "invalid dims"),
        ('output [ { name: "b" data_type: TYPE_FP32 dims: [1] } ]', "no input"),
        ('input [ { name: "a" data_type: TYPE_FP32 dims: [1] } ]', "no output"),
        ('max_batch_size: -1 input [ { name: "a" data_type: TYPE_FP32 dims: [1] } ]', "max_batch_size"),
        (A_IN + A_IN + B_OUT, "duplicate input"),
        (A_IN + B_OUT + ' parameters { key: "precision" value { string_value: "int4" } }', "precision"),
    ],
)
def test_invalid_configs_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text, "m")


def test_version_policies() -> None:
    spec = parse_config(mlp_config("m"), "m")
    assert select_versions(spec, [1, 2, 3]) == [3]
    spec = parse_config(mlp_config("m", extra="version_policy { latest { num_versions: 2 } }"), "m")
    assert select_versions(spec, [1, 2, 3]) == [2, 3]
    spec = parse_config(mlp_config("m", extra="version_policy { specific { versions: [1, 3] } }"), "m")
    assert select_versions(spec, [1, 2, 3]) == [1, 3]
    with pytest.raises(ConfigError, match="no version folder"):
        select_versions(spec, [2])


def test_model_names_cannot_leave_the_repository(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "config.pbtxt").write_text(mlp_config("good"))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "config.pbtxt").write_text(mlp_config(".hidden"))
    (tmp_path / "noconfig").mkdir()
    assert list_models(tmp_path) == ["good"]
    for name in ("..", "../good", "good/..", ".hidden", "a/b", "", "x" * 200):
        assert not valid_model_name(name)
        with pytest.raises(KeyError):
            model_dir(tmp_path, name)
    assert model_dir(tmp_path, "good") == tmp_path / "good"
