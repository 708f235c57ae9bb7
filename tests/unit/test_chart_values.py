"""The chart's metadata, CRDs, values documentation and schema agree with their sources."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from modelplane import __version__
from modelplane.testing import chart

REPO = Path(__file__).resolve().parents[2]


def test_app_version_is_the_package_version() -> None:
    meta = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())
    assert meta["appVersion"] == __version__


def test_chart_ships_exactly_the_crds_folder() -> None:
    generated = {p.name: p.read_text() for p in (REPO / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_text() for p in (chart.CHART / "crds").glob("*.yaml")}
    assert generated, "crds/ is empty"
    for name, text in generated.items():
        assert shipped.get(name) == text, (
            f"charts/modelplane/crds/{name} differs: run `modelplane crds generate`"
        )
    assert set(shipped) == set(generated)


def test_the_peering_object_is_of_the_peering_crds_type() -> None:
    crd = yaml.safe_load((REPO / "crds" / "kopf.dev_clusterkopfpeerings.yaml").read_text())
    (peering,) = yaml.safe_load_all((REPO / "deploy" / "operator" / "peering.yaml").read_text())
    assert peering["kind"] == crd["spec"]["names"]["kind"]
    assert peering["apiVersion"] == f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}"


def test_every_value_is_documented() -> None:
    undocumented = [d.path for d in chart.value_docs() if not d.description]
    assert undocumented == []
    assert len(chart.value_docs()) > 50


def test_schema_and_readme_table_are_generated_from_values() -> None:
    hint = "run `python -m modelplane.testing.chart`"
    assert (chart.CHART / "values.schema.json").read_text() == chart.render_schema(), hint
    readme = (chart.CHART / "README.md").read_text()
    assert readme == chart.readme_with_table(readme, chart.render_table()), hint
    for doc in chart.value_docs():
        assert f"| `{doc.path}` |" in readme


def test_schema_closes_the_chart_groups_and_leaves_kubernetes_shapes_open() -> None:
    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    operator = schema["properties"]["operator"]
    assert operator["additionalProperties"] is False
    assert operator["properties"]["replicas"] == {
        "type": "integer",
        "minimum": 1,
        "description": operator["properties"]["replicas"]["description"],
    }
    assert "additionalProperties" not in operator["properties"]["resources"]
    database = schema["properties"]["registry"]["properties"]["database"]
    assert database["properties"]["type"]["enum"] == ["sqlite", "postgresql"]


def test_descriptions_follow_nesting() -> None:
    text = "a:\n  # -- first\n  b: 1\n  c:\n    # -- deep\n    d: x\n# -- top\ne: []\n"
    assert chart.descriptions(text) == {"a.b": "first", "a.c.d": "deep", "e": "top"}


def test_the_operator_command_and_the_chart_default_to_the_same_artifact_secret() -> None:
    # A user following the README by hand gets what the chart installs: one Secret name.
    import inspect

    from modelplane.cli.operator_command import operator
    from modelplane.operator.children import ARTIFACT_TOKEN_SECRET, OperatorSettings

    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    default = inspect.signature(operator).parameters["artifact_token_secret"].default
    assert values["operator"]["artifactTokenSecret"] == ARTIFACT_TOKEN_SECRET == default
    assert OperatorSettings().artifact_token_secret == ARTIFACT_TOKEN_SECRET
