"""Generate the ModelDeployment CustomResourceDefinition from the pydantic API types.

Pydantic emits JSON Schema (2020-12); Kubernetes wants a *structural* OpenAPI v3.0 schema: no
``$ref``, no ``anyOf`` for optional fields, no ``title``, booleans for exclusive bounds, and
``additionalProperties`` never beside ``properties``. :func:`structural_schema` does that
translation, and adds each model's CEL rules as ``x-kubernetes-validations``.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from modelplane import __version__
from modelplane.api import v1alpha1 as api
from modelplane.api.rules import Rule

JsonSchema = dict[str, Any]

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    {"name": "Version", "type": "string", "jsonPath": ".status.model.version"},
    {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
    {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus"},
    {"name": "URL", "type": "string", "jsonPath": ".status.url"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Canary", "type": "integer", "jsonPath": ".spec.traffic.canary.percent", "priority": 1},
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": ".status.conditions[?(@.type=='Ready')].reason",
        "priority": 1,
    },
]


def _rules_by_title() -> dict[str, tuple[Rule, ...]]:
    """Map each schema object's JSON-Schema title (its class name) to its CEL rules."""
    found: dict[str, tuple[Rule, ...]] = {}
    for value in vars(api).values():
        if isinstance(value, type) and issubclass(value, api.ApiModel) and value.rules:
            found[value.__name__] = value.rules
    return found


def structural_schema(model: type[BaseModel]) -> JsonSchema:
    """Translate a pydantic model's JSON Schema into a Kubernetes structural schema."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, JsonSchema] = raw.pop("$defs", {})
    rules = _rules_by_title()

    def convert(node: JsonSchema) -> JsonSchema:
        node = copy.deepcopy(node)
        if "$ref" in node:
            target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
            merged = {**convert(target), **{k: v for k, v in node.items() if k != "title"}}
            return convert_keys(merged)
        any_of = node.pop("anyOf", None)
        if any_of is not None:
            options = [option for option in any_of if option.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"cannot express a union in a structural schema: {any_of}")
            node = {**convert(options[0]), **node}
            if node.get("default", ...) is None:
                node.pop("default")
        return convert_keys(node)

    def convert_keys(node: JsonSchema) -> JsonSchema:
        title = node.pop("title", None)
        if node.get("type") == "object" and "properties" in node:
            node.pop("additionalProperties", None)
            node["properties"] = {name: convert(sub) for name, sub in node["properties"].items()}
            if title in rules:
                node["x-kubernetes-validations"] = [rule.as_validation() for rule in rules[title]]
        elif isinstance(node.get("additionalProperties"), dict):
            node["additionalProperties"] = convert(node["additionalProperties"])
        if isinstance(node.get("items"), dict):
            node["items"] = convert(node["items"])
        for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
                node[plain] = node.pop(bound)
                node[bound] = True
        return node

    return convert(raw)


def _with_object_defaults(schema: JsonSchema, model: type[BaseModel]) -> JsonSchema:
    """Default each omitted sub-object to its model's defaults, spelled out in full.

    The API server validates a default against the object's CEL rules as it is written (nested
    defaults are not applied to it first), so ``default: {}`` would fail ``minReplicas <=
    maxReplicas``; the full default object passes, and a user who omits the section gets it.
    """
    for name, field in model.model_fields.items():
        key = field.alias or name
        sub = schema.get("properties", {}).get(key)
        annotation = field.annotation
        if sub is None or not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            continue
        if field.default_factory is not None:
            instance = field.default_factory()  # type: ignore[call-arg]
            sub["default"] = instance.model_dump(by_alias=True, exclude_none=True, mode="json")
        _with_object_defaults(sub, annotation)
    return schema


def custom_resource_definition() -> JsonSchema:
    """The whole CRD object for ModelDeployment, ready to serialize."""
    spec_schema = _with_object_defaults(structural_schema(api.ModelDeploymentSpec), api.ModelDeploymentSpec)
    status_schema = structural_schema(api.ModelDeploymentStatus)
    # kopf keeps handler progress under status; unknown status keys must survive pruning.
    status_schema["x-kubernetes-preserve-unknown-fields"] = True
    spec_schema["description"] = api.ModelDeploymentSpec.__doc__
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {
                "app.kubernetes.io/name": "modelplane",
                "app.kubernetes.io/part-of": "modelplane",
                "app.kubernetes.io/version": __version__,
            },
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": api.CATEGORIES,
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A model served on Kubernetes: registry version, runtime, GPUs, "
                            "autoscaling and traffic split.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


HEADER = (
    "# Generated by `modelplane crds generate` from the pydantic types in src/modelplane/api/. Do not edit:\n"
    "# change the types and regenerate (a test fails when this file and the types differ).\n"
)


def render() -> dict[str, str]:
    """File name → YAML text of every generated CRD."""
    text = yaml.safe_dump(custom_resource_definition(), sort_keys=False, width=100, allow_unicode=True)
    return {f"{api.GROUP}_{api.PLURAL}.yaml": HEADER + text}
