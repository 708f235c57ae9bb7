"""Deployment files: the CRD's types and rules, errors with file, line and field, bad files isolated."""

from __future__ import annotations

from pathlib import Path

from modelplane.local.specs import folder_signature, load_directory, load_file

GOOD = """\
apiVersion: modelplane.io/v1alpha1
kind: ModelDeployment
metadata:
  name: {name}
spec:
  model:
    name: iris
    alias: production
  autoscaling:
    minReplicas: 0
"""


def test_good_file_gives_the_typed_spec(tmp_path: Path) -> None:
    path = tmp_path / "iris.yaml"
    path.write_text(GOOD.format(name="iris"))
    found, errors = load_file(path)
    assert errors == []
    assert found[0].name == "iris"
    assert found[0].spec.model.alias == "production"
    assert found[0].spec.autoscaling.min_replicas == 0
    assert found[0].spec.autoscaling.max_replicas == 4  # the CRD's default


def test_wrong_type_names_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.format(name="iris").replace("minReplicas: 0", "minReplicas: lots"))
    found, errors = load_file(path)
    assert found == []
    assert [(e.line, e.field) for e in errors] == [(10, "spec.autoscaling.minReplicas")]
    assert str(errors[0]).startswith(f"{path}:10: spec.autoscaling.minReplicas: ")


def test_cross_field_rule_is_the_crds_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        GOOD.format(name="iris").replace("    alias: production\n", "    alias: production\n    version: 2\n")
    )
    _, errors = load_file(path)
    assert len(errors) == 1
    assert errors[0].field == "spec.model"
    assert errors[0].line == 7
    assert "set exactly one of version, alias or storageUri" in errors[0].message


def test_unknown_field_and_bad_name_and_broken_yaml(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(GOOD.format(name="iris") + "  replicaz: 2\n")
    assert load_file(unknown)[1][0].field == "spec.replicaz"
    bad_name = tmp_path / "name.yaml"
    bad_name.write_text(GOOD.format(name="Not_A_Label"))
    assert load_file(bad_name)[1][0].field == "metadata.name"
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    (error,) = load_file(broken)[1]
    assert "not valid YAML" in error.message
    assert error.line is not None


def test_directory_keeps_good_files_beside_bad_ones_and_reports_duplicates(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD.format(name="one"))
    (tmp_path / "b.yml").write_text(GOOD.format(name="one"))
    (tmp_path / "c.yaml").write_text("kind: Nope\n")
    (tmp_path / "d.yaml").write_text(GOOD.format(name="two"))
    (tmp_path / "notes.txt").write_text("ignored")
    found, errors = load_directory(tmp_path)
    assert sorted(found) == ["one", "two"]
    assert found["one"].path.name == "a.yaml"
    assert {e.path.name for e in errors} == {"b.yml", "c.yaml"}


def test_folder_signature_changes_on_edit(tmp_path: Path) -> None:
    before = folder_signature(tmp_path)
    (tmp_path / "a.yaml").write_text(GOOD.format(name="one"))
    after = folder_signature(tmp_path)
    assert before != after
    assert folder_signature(tmp_path) == after
