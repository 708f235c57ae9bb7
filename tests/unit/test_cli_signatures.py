"""Signatures for ``versions create``: ``--signature`` parsed and checked, a ``.pt2`` program read.

A signature is what the operator writes the runtime's configuration from, so it is checked the way
the operator and the runtime will use it; a program's signature is read as the runtime calls it
(inputs by position; a tensor, a tuple of tensors or a dict of tensors back).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from modelplane.cli.signatures import (
    EXAMPLE,
    SignatureError,
    batched,
    check_servable,
    infer_signature,
    parse_signature,
    signature_from_program,
)
from modelplane.registry_client.schemas import Signature
from modelplane.resolution.modelconfig import SignatureError as ConfigSignatureError
from modelplane.resolution.modelconfig import Tensor, model_config
from modelplane.serving.runtime.config import ConfigError, parse_config

SIGNATURE = {
    "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 3]}],
}


def tensors(
    signature: Signature,
) -> tuple[list[tuple[str, str, list[int]]], list[tuple[str, str, list[int]]]]:
    return (
        [(t.name, t.datatype, t.shape) for t in signature.inputs],
        [(t.name, t.datatype, t.shape) for t in signature.outputs],
    )


# --- --signature ----------------------------------------------------------------------------------


def test_inline_json_json_file_and_yaml_file_give_the_same_signature(tmp_path: Path) -> None:
    json_file = tmp_path / "signature.json"
    json_file.write_text(json.dumps(SIGNATURE))
    yaml_file = tmp_path / "signature.yaml"
    yaml_file.write_text(
        "inputs:\n  - {name: INPUT__0, datatype: FP32, shape: [-1, 4]}\n"
        "outputs:\n  - name: OUTPUT__0\n    datatype: FP32\n    shape: [-1, 3]\n"
    )
    expected = Signature.model_validate(SIGNATURE)
    assert parse_signature(json.dumps(SIGNATURE)) == expected
    assert parse_signature(f"  {json.dumps(SIGNATURE)}\n") == expected
    assert parse_signature(str(json_file)) == expected
    assert parse_signature(str(yaml_file)) == expected
    assert parse_signature(EXAMPLE) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('{"inputs": [', "--signature is not valid JSON"),
        ("missing.json", "is neither a file nor inline JSON such as"),
        (
            '{"inputs": [{"name": "x", "datatype": "fp32", "shape": [-1]}]}',
            "inputs.0.datatype: Input should be",
        ),
        ('{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-2]}]}', "inputs.0.shape.0"),
        ('{"input": []}', "input: Extra inputs are not permitted"),
    ],
)
def test_a_bad_value_says_what_is_wrong(value: str, says: str) -> None:
    with pytest.raises(SignatureError) as caught:
        parse_signature(value)
    assert says in str(caught.value)


def test_a_file_that_is_not_an_object_or_not_yaml_is_refused(tmp_path: Path) -> None:
    listed = tmp_path / "list.yaml"
    listed.write_text("- INPUT__0\n")
    with pytest.raises(SignatureError, match="a signature is an object with inputs and outputs"):
        parse_signature(str(listed))
    broken = tmp_path / "broken.yaml"
    broken.write_text("inputs: [\n")
    with pytest.raises(SignatureError, match="cannot read the signature file"):
        parse_signature(str(broken))


UNSERVABLE = [
    ({"outputs": []}, "at least one input and one output"),
    ({"inputs": []}, "at least one input and one output"),
    ({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [-1]}]}, "which torch models cannot take"),
    ({"outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 0]}]}, "invalid dims"),
    (
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [-1]},
                {"name": "x", "datatype": "FP32", "shape": [-1]},
            ]
        },
        "duplicate input names",
    ),
]


@pytest.mark.parametrize(("change", "says"), UNSERVABLE)
def test_a_signature_the_runtime_cannot_serve_is_refused(change: dict[str, object], says: str) -> None:
    signature = Signature.model_validate({**SIGNATURE, **change})
    with pytest.raises(SignatureError) as caught:
        check_servable(signature)
    assert says in str(caught.value)


def test_a_servable_signature_passes_and_batches_when_every_first_dimension_is_dynamic() -> None:
    signature = Signature.model_validate(SIGNATURE)
    check_servable(signature)
    assert batched(signature)
    fixed = Signature.model_validate(
        {**SIGNATURE, "outputs": [{"name": "y", "datatype": "FP32", "shape": [3]}]}
    )
    check_servable(fixed)
    assert not batched(fixed)


def _runtime_refuses(signature: Signature) -> bool:
    """What the operator and the runtime do with a version's signature."""
    try:
        text = model_config(
            "iris",
            [Tensor(t.name, t.datatype, tuple(t.shape)) for t in signature.inputs],
            [Tensor(t.name, t.datatype, tuple(t.shape)) for t in signature.outputs],
            max_batch_size=8,
            max_latency_ms=2.0,
            gpus=0,
            artifact_uri="file:///model.pt",
            sha256=None,
            version=1,
        )
        parse_config(text, "iris")
    except (ConfigSignatureError, ConfigError):
        return True
    return False


@pytest.mark.parametrize(
    "change",
    [{}, {"outputs": [{"name": "y", "datatype": "BOOL", "shape": [2, -1]}]}] + [c for c, _ in UNSERVABLE],
)
def test_check_servable_agrees_with_the_operator_and_the_runtime(change: dict[str, object]) -> None:
    signature = Signature.model_validate({**SIGNATURE, **change})
    try:
        check_servable(signature)
        refused = False
    except SignatureError:
        refused = True
    assert refused == _runtime_refuses(signature)


# --- .pt2 -----------------------------------------------------------------------------------------


class TwoInTwoOut(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x).softmax(-1), ids.sum(-1)


class DictOut(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probs": x.softmax(-1), "top": x.argmax(-1)}


class Scaled(torch.nn.Module):
    def forward(self, x: torch.Tensor, factor: int) -> torch.Tensor:
        return x * factor


class KeywordIn(torch.nn.Module):
    def forward(self, x: torch.Tensor, *, y: torch.Tensor) -> torch.Tensor:
        return x + y


class NestedOut(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        return x, (x + 1, x + 2)


def test_a_program_with_a_dynamic_batch_gives_v2_names_datatypes_and_minus_one(tmp_path: Path) -> None:
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        TwoInTwoOut(),
        (torch.zeros(2, 4), torch.zeros(2, 5, dtype=torch.int64)),
        dynamic_shapes=({0: batch}, {0: batch}),
    )
    path = tmp_path / "model.pt2"
    torch.export.save(program, str(path))
    signature = infer_signature(path)
    assert signature is not None
    assert tensors(signature) == (
        [("INPUT__0", "FP32", [-1, 4]), ("INPUT__1", "INT64", [-1, 5])],
        [("OUTPUT__0", "FP32", [-1, 3]), ("OUTPUT__1", "INT64", [-1])],
    )
    check_servable(signature)
    assert batched(signature)


def test_a_program_with_fixed_shapes_and_dict_outputs_keeps_them() -> None:
    program = torch.export.export(DictOut(), (torch.zeros(2, 3, dtype=torch.float16),))
    signature = signature_from_program(program)
    assert tensors(signature) == (
        [("INPUT__0", "FP16", [2, 3])],
        [("probs", "FP16", [2, 3]), ("top", "INT64", [2])],
    )
    assert not batched(signature)


@pytest.mark.parametrize(
    ("module", "args", "kwargs", "says"),
    [
        (Scaled(), (torch.zeros(2, 3), 3), {}, "input 'factor' is not a tensor"),
        (KeywordIn(), (torch.zeros(2, 3),), {"y": torch.zeros(2, 3)}, "takes keyword inputs (y)"),
        (NestedOut(), (torch.zeros(2, 3),), {}, "returns a nested structure"),
    ],
    ids=["constant-input", "keyword-input", "nested-output"],
)
def test_a_program_the_runtime_cannot_call_is_refused(
    module: torch.nn.Module, args: tuple[object, ...], kwargs: dict[str, object], says: str
) -> None:
    program = torch.export.export(module, args, kwargs)
    with pytest.raises(SignatureError) as caught:
        signature_from_program(program, "model.pt2")
    assert says in str(caught.value)


def test_files_that_record_no_signature_are_not_opened(tmp_path: Path) -> None:
    for name in ("model.pt", "model.pth", "model.bin"):
        path = tmp_path / name
        path.write_bytes(b"not read")
        assert infer_signature(path) is None


def test_an_unreadable_pt2_says_why_without_torchs_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.pt2"
    path.write_bytes(b"not a zip archive")
    with caplog.at_level(logging.DEBUG), pytest.raises(SignatureError) as caught:
        infer_signature(path)
    assert str(caught.value).startswith("cannot read model.pt2 as a torch.export program: ")
    assert not [r for r in caplog.records if r.name.startswith("torch.export")]
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
