"""The Helm chart's documentation and schema, derived from the comments in its values.yaml.

Every value in ``charts/modelplane/values.yaml`` carries a ``# -- description`` comment. From those
comments come the values table in the chart's README and ``values.schema.json`` (types from the
defaults, ``additionalProperties: false`` on every group of the chart's own settings, so a typo is
an error instead of a silently ignored value). ``python -m modelplane.testing.chart`` rewrites both;
the unit tests fail when either is stale, or when a value has no description.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "modelplane"
TABLE_START = "<!-- values-table:start -->"
TABLE_END = "<!-- values-table:end -->"

FREE_FORM = {
    "podSecurityContext",
    "containerSecurityContext",
    "commonLabels",
    "resources",
    "podAnnotations",
    "nodeSelector",
    "affinity",
    "annotations",
    "labels",
}
"""Keys whose content is Kubernetes' own (or the user's) shape: objects the schema leaves open."""

ENUMS: dict[str, list[Any]] = {
    "registry.database.type": ["sqlite", "postgresql"],
    "image.pullPolicy": ["Always", "IfNotPresent", "Never"],
    "registry.service.type": ["ClusterIP", "NodePort", "LoadBalancer"],
    "router.service.type": ["ClusterIP", "NodePort", "LoadBalancer"],
}
MINIMUMS: dict[str, int] = {
    "operator.replicas": 1,
    "registry.replicas": 1,
    "router.replicas": 0,
    "registry.port": 1,
    "router.httpPort": 1,
    "router.grpcPort": 1,
    "operator.healthPort": 1,
    "operator.metricsPort": 1,
    "registry.service.port": 1,
    "router.service.httpPort": 1,
    "router.service.grpcPort": 1,
    "router.queueSize": 1,
    "router.maxBodyBytes": 1,
    "registry.maxArtifactBytes": 0,
}


@dataclass(frozen=True)
class ValueDoc:
    path: str
    default: Any
    description: str


def descriptions(values_text: str) -> dict[str, str]:
    """``dotted.path`` -> the ``# --`` comment right above the key."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending = ""
    for line in values_text.splitlines():
        comment = re.match(r"^\s*# -- (.*)$", line)
        if comment:
            pending = comment.group(1).strip()
            continue
        key = re.match(r"^(\s*)([A-Za-z][\w-]*):", line)
        if not key:
            if line.strip() and not line.strip().startswith("#"):
                pending = ""
            continue
        indent = len(key.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([*(name for _, name in stack), key.group(2)])
        stack.append((indent, key.group(2)))
        if pending:
            found[path] = pending
        pending = ""
    return found


def _leaves(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict) and prefix.rsplit(".", 1)[-1] not in FREE_FORM:
        out: list[tuple[str, Any]] = []
        for key, item in value.items():
            out.extend(_leaves(item, f"{prefix}.{key}" if prefix else key))
        return out
    return [(prefix, value)]


def value_docs(chart: Path = CHART) -> list[ValueDoc]:
    """Every leaf value with its default and description (empty description: undocumented)."""
    text = (chart / "values.yaml").read_text()
    docs = descriptions(text)
    return [ValueDoc(path, default, docs.get(path, "")) for path, default in _leaves(yaml.safe_load(text))]


def _type_of(path: str, default: Any) -> dict[str, Any]:
    if isinstance(default, bool):
        schema: dict[str, Any] = {"type": "boolean"}
    elif isinstance(default, int):
        schema = {"type": "integer"}
    elif isinstance(default, float):
        schema = {"type": "number"}
    elif isinstance(default, str):
        schema = {"type": "string"}
    elif isinstance(default, list):
        schema = {"type": "array"}
        if path.endswith(
            ("watchNamespaces", "routerMetricsUrls", "accessModes", "hostnames")
        ) or path.endswith(("extraArgs",)):
            schema["items"] = {"type": "string"}
        else:
            schema["items"] = {"type": "object"}
    else:
        schema = {"type": "object"}
        if path.endswith(("Labels", "labels", "Annotations", "annotations", "nodeSelector")):
            schema["additionalProperties"] = {"type": "string"}
    if path in ENUMS:
        schema["enum"] = ENUMS[path]
    if path in MINIMUMS:
        schema["minimum"] = MINIMUMS[path]
    return schema


def render_schema(chart: Path = CHART) -> str:
    """values.schema.json: closed groups, typed leaves, descriptions from values.yaml."""
    root: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft-07/schema#",
        "title": "Values of the modelplane chart",
        "type": "object",
        "additionalProperties": False,
        "properties": {},
    }
    for doc in value_docs(chart):
        node = root
        parts = doc.path.split(".")
        for part in parts[:-1]:
            node = node["properties"].setdefault(
                part, {"type": "object", "additionalProperties": False, "properties": {}}
            )
        leaf = _type_of(doc.path, doc.default)
        leaf["description"] = doc.description
        node["properties"][parts[-1]] = leaf
    return json.dumps(root, indent=2) + "\n"


def _cell(value: Any) -> str:
    text = json.dumps(value)
    return "`" + text.replace("|", "\\|") + "`"


def render_table(chart: Path = CHART) -> str:
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for doc in value_docs(chart):
        kind = _type_of(doc.path, doc.default)["type"]
        text = doc.description.replace("|", "\\|")
        rows.append(f"| `{doc.path}` | {kind} | {_cell(doc.default)} | {text} |")
    return "\n".join(rows) + "\n"


def readme_with_table(readme: str, table: str) -> str:
    start, end = readme.index(TABLE_START), readme.index(TABLE_END)
    return readme[: start + len(TABLE_START)] + "\n" + table + readme[end:]


def helm_binary() -> str:
    """The cached Helm the dev cluster builds (``make cluster-bins``), else one on PATH."""
    from modelplane.devcluster import build

    cached = build.binary_path(build.helm_component(), "helm")
    binary = str(cached) if cached.is_file() else shutil.which("helm")
    if binary is None:
        raise AssertionError("no helm: run `make cluster-bins` (builds one) or put helm on PATH")
    return binary


def helm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run Helm without a cluster (lint, template); the caller checks the result."""
    return subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def template(*sets: str, release: str = "mp", namespace: str = "modelplane-system") -> list[dict[str, Any]]:
    """The chart rendered with ``--set`` values, as a list of manifests (raises with Helm's error)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for item in sets:
        args += ["--set", item]
    result = helm(*args)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def main() -> None:
    """Rewrite values.schema.json and the README's values table from values.yaml."""
    (CHART / "values.schema.json").write_text(render_schema())
    readme = CHART / "README.md"
    readme.write_text(readme_with_table(readme.read_text(), render_table()))
    print(f"wrote {CHART / 'values.schema.json'} and the values table of {readme}", file=sys.stderr)


if __name__ == "__main__":
    main()
