"""Tensor signatures for ``modelplane registry versions create``: from ``--signature`` or the artifact.

The operator serves a registry version only when the version has a signature: the tensors the
model takes and returns, from which it writes the runtime's model configuration. A ``torch.export``
program (``.pt2``) records its inputs' and outputs' datatypes and shapes, so the signature is read
from the file; a TorchScript file (``.pt``) does not, so it needs ``--signature``. Names follow the
runtime's convention for positional tensors (``INPUT__0``, ``OUTPUT__0``, as Triton's PyTorch
backend); a program that returns a dict keeps its keys, which is how the runtime picks dict
outputs. torch is imported only to read a ``.pt2``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelplane.registry_client.schemas import Signature, TensorSpec

#: Artifact suffixes whose files record their tensor signature.
RECORDS_SIGNATURE = (".pt2",)

#: torch dtype name (``str(dtype)`` without ``torch.``) -> V2 datatype.
V2_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "bfloat16": "BF16",
}

#: What a signature looks like, for messages.
EXAMPLE = (
    '{"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 4]}], '
    '"outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 3]}]}'
)


class SignatureError(ValueError):
    """A signature that cannot be used; the message says what to change."""


def parse_signature(value: str) -> Signature:
    """``--signature``: inline JSON, or the path of a JSON or YAML file, checked by the registry's schema."""
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SignatureError(f"--signature is not valid JSON: {exc}") from None
        where = "--signature"
    else:
        import yaml

        path = Path(value).expanduser()
        if not path.is_file():
            raise SignatureError(
                f"--signature {value!r} is neither a file nor inline JSON such as '{EXAMPLE}'"
            )
        try:
            data = yaml.safe_load(path.read_text())  # YAML reads JSON too
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise SignatureError(f"cannot read the signature file {path}: {exc}") from None
        where = str(path)
    if not isinstance(data, dict):
        raise SignatureError(
            f"{where}: a signature is an object with inputs and outputs, such as '{EXAMPLE}'"
        )
    try:
        return Signature.model_validate(data)
    except ValidationError as exc:
        raise SignatureError(f"{where} is not a valid signature: {_errors(exc)}") from None


def _errors(exc: ValidationError, limit: int = 5) -> str:
    found = [f"{'.'.join(str(p) for p in e['loc']) or 'signature'}: {e['msg']}" for e in exc.errors()]
    more = f" (and {len(found) - limit} more)" if len(found) > limit else ""
    return "; ".join(found[:limit]) + more


def check_servable(signature: Signature) -> None:
    """Raise SignatureError unless the runtime accepts the configuration the operator writes from it.

    The runtime's own checks (``modelplane.serving.runtime.config``), restated here because the
    registry's command line does not import a serving part: inputs and outputs present, tensors a
    torch model takes (no BYTES), no zero-sized dimension, no name twice.
    """
    if not signature.inputs or not signature.outputs:
        raise SignatureError(
            "a signature needs at least one input and one output for the operator to serve the version"
        )
    for kind, group in (("input", signature.inputs), ("output", signature.outputs)):
        for tensor in group:
            if tensor.datatype == "BYTES":
                raise SignatureError(
                    f"the signature cannot be served: {kind} {tensor.name!r} is BYTES, which torch "
                    "models cannot take; use a numeric or boolean datatype"
                )
            if 0 in tensor.shape:
                raise SignatureError(
                    f"the signature cannot be served: {kind} {tensor.name!r} has invalid dims "
                    f"{tensor.shape} (use -1 for a dimension of any size)"
                )
        names = [t.name for t in group]
        if len(set(names)) != len(names):
            raise SignatureError(f"the signature cannot be served: duplicate {kind} names in {names}")


def batched(signature: Signature) -> bool:
    """Whether every tensor's first dimension is the dynamic batch dimension (-1)."""
    tensors = signature.inputs + signature.outputs
    return bool(tensors) and all(t.shape and t.shape[0] == -1 for t in tensors)


def infer_signature(path: Path) -> Signature | None:
    """The signature the artifact records, or None for file types that record none (``.pt``, ``.pth``)."""
    if path.suffix not in RECORDS_SIGNATURE:
        return None
    program = _load_program(path)
    try:
        return signature_from_program(program, path.name)
    except SignatureError:
        raise
    except Exception as exc:  # a program this reading does not know: say so, not a traceback
        raise SignatureError(f"cannot read the signature of {path.name}: {exc!r}") from None


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _load_program(path: Path) -> Any:
    """``torch.export.load``, with the cause of a failure in the error rather than logged above it."""
    import torch

    export_log = logging.getLogger("torch.export")
    kept, handlers, propagate = _Kept(), export_log.handlers, export_log.propagate
    export_log.handlers, export_log.propagate = [kept], False
    try:
        return torch.export.load(str(path))
    except Exception as exc:  # torch raises many types for a file it cannot read
        causes = [r.exc_info[1] for r in kept.records if r.exc_info and r.exc_info[1] is not None]
        reason = str(causes[-1] if causes else exc).split(". ")[0].strip()
        raise SignatureError(f"cannot read {path.name} as a torch.export program: {reason}") from None
    finally:
        export_log.handlers, export_log.propagate = handlers, propagate


def signature_from_program(program: Any, what: str = "the program") -> Signature:
    """The inputs and outputs of a ``torch.export.ExportedProgram``, as the runtime will call it.

    The runtime calls the program with its inputs by position and takes a tensor, a tuple or list
    of tensors, or a dict of tensors back; a dynamic dimension becomes -1.
    """
    from torch.export.graph_signature import InputKind, OutputKind

    _check_call_structure(program, what)
    graph_signature = program.graph_signature
    placeholders = [node for node in program.graph.nodes if node.op == "placeholder"]
    inputs = []
    user_inputs = [
        (spec, node)
        for spec, node in zip(graph_signature.input_specs, placeholders, strict=True)
        if spec.kind == InputKind.USER_INPUT
    ]
    for index, (spec, node) in enumerate(user_inputs):
        inputs.append(
            _tensor_spec(f"INPUT__{index}", node.meta.get("val"), f"{what}: input {spec.arg.name!r}")
        )
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    values = output_node.args[0]
    user_outputs = [
        value
        for spec, value in zip(graph_signature.output_specs, values, strict=True)
        if spec.kind == OutputKind.USER_OUTPUT
    ]
    names = _output_names(program, len(user_outputs), what)
    outputs = [
        _tensor_spec(name, getattr(value, "meta", {}).get("val"), f"{what}: output {name!r}")
        for name, value in zip(names, user_outputs, strict=True)
    ]
    try:
        return Signature(inputs=inputs, outputs=outputs)
    except ValidationError as exc:
        raise SignatureError(f"{what}: {_errors(exc)}") from None


def _check_call_structure(program: Any, what: str) -> None:
    in_spec = program.call_spec.in_spec
    if in_spec is None or in_spec.num_children != 2:
        return
    args_spec, kwargs_spec = in_spec.children()
    if kwargs_spec.num_children:
        keys = ", ".join(str(k) for k in kwargs_spec.context)
        raise SignatureError(
            f"{what} takes keyword inputs ({keys}), but the runtime passes inputs by position: "
            "export it with positional inputs only"
        )
    if not all(child.is_leaf() for child in args_spec.children()):
        raise SignatureError(
            f"{what} takes nested inputs (tuples, lists or dicts), but the runtime passes one tensor "
            "per input: export it with tensor inputs only"
        )


def _output_names(program: Any, count: int, what: str) -> list[str]:
    out_spec = program.call_spec.out_spec
    if out_spec is None or out_spec.is_leaf():
        return [f"OUTPUT__{i}" for i in range(count)]
    flat = all(child.is_leaf() for child in out_spec.children())
    if flat and out_spec.type is dict:
        return [str(key) for key in out_spec.context]
    if flat and isinstance(out_spec.type, type) and issubclass(out_spec.type, tuple | list):
        return [f"OUTPUT__{i}" for i in range(count)]
    raise SignatureError(
        f"{what} returns a nested structure, but the runtime takes a tensor, a tuple or list "
        "of tensors, or a dict of tensors back"
    )


def _tensor_spec(name: str, value: Any, what: str) -> TensorSpec:
    import torch

    if not isinstance(value, torch.Tensor):
        kind = type(value).__name__ if value is not None else "no recorded value"
        raise SignatureError(f"{what} is not a tensor ({kind}); the runtime passes and takes tensors only")
    dtype = str(value.dtype).removeprefix("torch.")
    datatype = V2_DATATYPES.get(dtype)
    if datatype is None:
        raise SignatureError(f"{what} has dtype {dtype}, which the V2 protocol has no datatype for")
    shape = [d if isinstance(d, int) else -1 for d in value.shape]  # a SymInt is a dynamic dimension
    return TensorSpec.model_validate({"name": name, "datatype": datatype, "shape": shape})
