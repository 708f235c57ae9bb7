"""The ModelDeployment types: defaults a user relies on, and bad specs rejected naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from modelplane.api.v1alpha1 import ModelDeployment

GOOD: dict[str, Any] = {
    "apiVersion": "modelplane.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "default"},
    "spec": {"model": {"name": "iris", "alias": "production"}},
}


SIGNATURE = {
    "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 64]}],
    "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 10]}],
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one field set (value ... deletes it); `path` is dotted, e.g. spec.model.version."""
    doc = copy.deepcopy(GOOD)
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        del node[leaf]
    else:
        node[leaf] = value
    return doc


def test_minimal_spec_gets_the_documented_defaults() -> None:
    spec = ModelDeployment.model_validate(GOOD).spec
    assert spec.runtime.name == "torch"
    assert spec.resources.gpu.count == 1
    assert spec.autoscaling.mode == "builtin"
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (1, 4)
    assert spec.autoscaling.stable_window_seconds == 60
    assert spec.autoscaling.panic_window_seconds == 6
    assert spec.autoscaling.panic_threshold_percent == 200
    assert spec.batching.max_batch_size >= 1
    assert spec.traffic.canary is None
    assert spec.traffic.shadow is None


def test_full_spec_round_trips_in_camel_case() -> None:
    doc = copy.deepcopy(GOOD)
    doc["spec"] = {
        "model": {"name": "iris", "version": 3},
        "runtime": {"name": "torch", "args": ["--log-level", "debug"], "env": [{"name": "A", "value": "1"}]},
        "resources": {"gpu": {"count": 2, "types": ["H100", "A100"]}, "cpu": "500m", "memory": "8Gi"},
        "scheduling": {
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "high",
        },
        "autoscaling": {
            "minReplicas": 0,
            "maxReplicas": 8,
            "targetConcurrency": 4,
            "scaleDownDelaySeconds": 10,
        },
        "batching": {"maxBatchSize": 16, "maxLatencyMs": 2.5},
        "traffic": {"canary": {"version": 4, "percent": 20}, "shadow": {"alias": "candidate", "percent": 5}},
        "replicas": 3,
    }
    parsed = ModelDeployment.model_validate(doc)
    dumped = parsed.model_dump(by_alias=True, exclude_none=True)
    assert dumped["spec"]["resources"]["gpu"]["types"] == ["H100", "A100"]
    assert dumped["spec"]["autoscaling"]["scaleDownDelaySeconds"] == 10
    assert dumped["spec"]["traffic"]["canary"] == {"version": 4, "percent": 20}
    assert ModelDeployment.model_validate(dumped) == parsed


BAD_SPECS = [
    pytest.param(_with("spec.model", ...), "spec.model", id="missing-model"),
    pytest.param(
        _with("spec.model.version", 2), "exactly one of version, alias or storageUri", id="version-and-alias"
    ),
    pytest.param(
        _with("spec.model.alias", ...), "exactly one of version, alias or storageUri", id="no-version"
    ),
    pytest.param(_with("spec.replicas", -1), "spec.replicas", id="negative-replicas"),
    pytest.param(
        _with("spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
        "minReplicas must not exceed maxReplicas",
        id="min-above-max",
    ),
    pytest.param(
        _with("spec.traffic", {"canary": {"version": 2, "percent": 130}}),
        "spec.traffic.canary.percent",
        id="percent-130",
    ),
    pytest.param(
        _with("spec.resources", {"gpu": {"cores": 2}}), "spec.resources.gpu.cores", id="unknown-gpu-field"
    ),
    pytest.param(_with("spec.resources", {"memory": "8 gigs"}), "spec.resources.memory", id="bad-quantity"),
    pytest.param(_with("spec.runtime", {"name": "tensorflow"}), "spec.runtime.name", id="unknown-runtime"),
    pytest.param(_with("spec.model.name", "Iris Model"), "spec.model.name", id="bad-model-name"),
    pytest.param(
        _with("spec.resources", {"gpu": {"migProfile": "big"}}), "spec.resources.gpu.migProfile", id="bad-mig"
    ),
    pytest.param(
        _with("spec.model", {"name": "iris", "version": 1, "sha256": "0" * 64}),
        "sha256 applies only",
        id="sha-no-uri",
    ),
    pytest.param(
        _with("spec.model", {"name": "iris", "storageUri": "https://models.example.com/iris.pt"}),
        "storageUri needs a signature",
        id="uri-without-signature",
    ),
    pytest.param(
        _with("spec.model", {"name": "iris", "version": 1, "signature": SIGNATURE}),
        "only storageUri takes one",
        id="signature-with-version",
    ),
    pytest.param(
        _with(
            "spec.model",
            {"name": "iris", "storageUri": "file:///m.pt", "signature": {**SIGNATURE, "inputs": []}},
        ),
        "spec.model.signature.inputs",
        id="signature-without-inputs",
    ),
    pytest.param(
        _with(
            "spec.model",
            {
                "name": "iris",
                "storageUri": "file:///m.pt",
                "signature": {**SIGNATURE, "outputs": [{"name": "y", "datatype": "FLOAT", "shape": [-1]}]},
            },
        ),
        "spec.model.signature.outputs.0.datatype",
        id="signature-bad-datatype",
    ),
    pytest.param(
        _with("spec.autoscaling", {"targetConcurrency": 0}),
        "spec.autoscaling.targetConcurrency",
        id="zero-target",
    ),
]


@pytest.mark.parametrize(("doc", "expected"), BAD_SPECS)
def test_bad_spec_is_rejected_naming_the_field(doc: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ModelDeployment.model_validate(doc)
    rendered = "\n".join(
        ".".join(str(part) for part in error["loc"]) + ": " + error["msg"] for error in caught.value.errors()
    )
    assert expected in rendered, rendered


def test_a_storage_uri_with_its_signature_is_accepted() -> None:
    doc = _with(
        "spec.model",
        {
            "name": "iris",
            "storageUri": "https://models.example.com/iris.pt",
            "sha256": "a" * 64,
            "signature": SIGNATURE,
        },
    )
    model = ModelDeployment.model_validate(doc).spec.model
    assert model.signature is not None
    assert [t.shape for t in model.signature.inputs] == [[-1, 64]]
