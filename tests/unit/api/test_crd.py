"""The generated CRD: current with the types, structural, and its CEL rules equal to the Python ones."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy.adapter import json_to_cel

from modelplane.api import v1alpha1 as api
from modelplane.api.crd import custom_resource_definition, render
from modelplane.api.reference import render_reference
from modelplane.api.rules import Rule

REPO = Path(__file__).resolve().parents[3]


def test_committed_crds_and_reference_match_the_types() -> None:
    expected = {REPO / "crds" / name: text for name, text in render().items()}
    expected[REPO / "docs/reference/modeldeployment.md"] = render_reference()
    for committed, text in expected.items():
        assert committed.exists(), f"{committed} is missing: run `modelplane crds generate`"
        assert committed.read_text() == text, f"{committed} is stale: run `modelplane crds generate`"


def test_reference_documents_every_spec_field_and_rule() -> None:
    page = render_reference()
    for field in (
        "spec.model.alias",
        "spec.resources.gpu.types",
        "spec.autoscaling.minReplicas",
        "spec.traffic.canary.percent",
        "status.conditions[].lastTransitionTime",
    ):
        assert f"`{field}`" in page
    assert "minReplicas must not exceed maxReplicas" in page


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found.extend(_walk(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_walk(value, f"{path}[{i}]"))
    return found


def test_schema_is_structural() -> None:
    schema = custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        if path.endswith("/default") or "/default/" in path:
            continue
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs", "const"):
            assert forbidden not in node, f"{forbidden} at {path}"
        if "properties" in node and path.rsplit("/", 1)[-1] != "properties":
            assert node.get("type") == "object", f"untyped object at {path}"
            assert "additionalProperties" not in node, f"additionalProperties beside properties at {path}"
        if isinstance(node.get("exclusiveMinimum"), int | float) and not isinstance(
            node["exclusiveMinimum"], bool
        ):
            pytest.fail(f"JSON-Schema-2020 exclusiveMinimum at {path}")


def test_crd_has_the_promised_names_columns_and_subresources() -> None:
    crd = custom_resource_definition()
    assert crd["spec"]["names"]["shortNames"] == ["md"]
    assert crd["spec"]["names"]["categories"] == ["modelplane"]
    version = crd["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]][:6] == [
        "Model",
        "Version",
        "Ready",
        "GPUs",
        "URL",
        "Age",
    ]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    yaml.safe_load(next(iter(render().values())))  # valid YAML


# Values to try for each field a rule looks at; every combination is checked.
CANDIDATES: dict[str, list[Any]] = {
    "version": [None, 1, 7],
    "alias": [None, "production"],
    "storage_uri": [None, "https://example.test/m.pt"],
    "sha256": [None, "0" * 64],
    "value": [None, "x"],
    "value_from": [None, {"fieldRef": {"fieldPath": "status.podIP"}}],
    "mig_profile": [None, "1g.10gb"],
    "count": [0, 1, 2],
    "min_replicas": [0, 1, 3, 5],
    "max_replicas": [1, 3, 5],
    "panic_window_seconds": [1, 6, 60],
    "stable_window_seconds": [6, 60],
    "percent": [0, 100],
}


def _models_with_rules() -> list[type[api.ApiModel]]:
    return [
        value
        for value in vars(api).values()
        if isinstance(value, type) and issubclass(value, api.ApiModel) and value.rules
    ]


def _cases(model: type[api.ApiModel]) -> list[dict[str, Any]]:
    fields = [name for name in model.model_fields if name in CANDIDATES]
    return [
        dict(zip(fields, combo, strict=True)) for combo in itertools.product(*(CANDIDATES[f] for f in fields))
    ]


@pytest.mark.parametrize("model", _models_with_rules(), ids=lambda m: m.__name__)
def test_cel_rules_agree_with_their_python_twins(model: type[api.ApiModel]) -> None:
    env = celpy.Environment()
    programs: list[tuple[Rule, Any]] = [(rule, env.program(env.compile(rule.cel))) for rule in model.rules]
    cases = _cases(model)
    assert len(cases) >= 4, f"too few cases for {model.__name__}: add its fields to CANDIDATES"
    for kwargs in cases:
        obj = model.model_construct(**kwargs)
        # The API server applies defaults before CEL and omits unset (None) fields: has() is false.
        wire = obj.model_dump(by_alias=True, exclude_none=True)
        for rule, program in programs:
            cel_verdict = bool(program.evaluate({"self": json_to_cel(wire)}))
            assert cel_verdict == rule.check(obj), f"{model.__name__} {rule.cel!r} disagrees on {wire}"
