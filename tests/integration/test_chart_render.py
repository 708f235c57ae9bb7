"""The chart, rendered by the real Helm: lint, security contexts, RBAC, images, commands, schema errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from modelplane.cli.main import app
from modelplane.testing import chart

EVERYTHING = (
    "metrics.serviceMonitor.enabled=true",
    "metrics.prometheusRule.enabled=true",
    "metrics.grafanaDashboard.enabled=true",
    "router.ingress.enabled=true",
    "router.httpRoute.enabled=true",
    "router.httpRoute.parentRefs[0].name=public",
)
FORBIDDEN_VERBS = {"*", "bind", "escalate", "impersonate"}


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return chart.template(*EVERYTHING)


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"}


def containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c for spec in pod_specs(docs).values() for c in [*spec.get("initContainers", []), *spec["containers"]]
    ]


@pytest.mark.parametrize("sets", [(), EVERYTHING], ids=["defaults", "everything"])
def test_helm_lint_strict_is_clean(sets: tuple[str, ...]) -> None:
    args = ["lint", "--strict", str(chart.CHART)]
    for item in sets:
        args += ["--set", item]
    result = chart.helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout
    assert "[ERROR]" not in result.stdout


def test_renders_every_component(manifests: list[dict[str, Any]]) -> None:
    kinds = sorted({d["kind"] for d in manifests})
    assert kinds == sorted(
        {
            "ClusterKopfPeering",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "HTTPRoute",
            "Ingress",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Secret",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        }
    )
    deployments = {
        d["metadata"]["name"]: d["spec"]["replicas"] for d in manifests if d["kind"] == "Deployment"
    }
    assert deployments == {
        "mp-modelplane-operator": 2,
        "mp-modelplane-registry": 1,
        "mp-modelplane-router": 2,
    }
    pdbs = {d["metadata"]["name"] for d in manifests if d["kind"] == "PodDisruptionBudget"}
    assert pdbs == {"mp-modelplane-operator", "mp-modelplane-router"}
    dashboard = next(d for d in manifests if d["kind"] == "ConfigMap")
    assert json.loads(dashboard["data"]["modelplane.json"])["uid"] == "modelplane-overview"


def test_every_pod_meets_the_restricted_pod_security_standard(manifests: list[dict[str, Any]]) -> None:
    for name, spec in pod_specs(manifests).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not any(spec.get(key) for key in ("hostNetwork", "hostPID", "hostIPC")), name
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"], name
        assert not any("hostPath" in v for v in volumes.values()), name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert {m["mountPath"]: m["name"] for m in c["volumeMounts"]}["/tmp"] == "tmp", name
            assert c["resources"]["requests"], name
            assert c["resources"]["limits"]["memory"], name
            assert c["readinessProbe"], name
            assert c["livenessProbe"], name


def test_rbac_is_least_privilege(manifests: list[dict[str, Any]]) -> None:
    roles = [d for d in manifests if d["kind"] in ("ClusterRole", "Role")]
    assert {r["metadata"]["name"] for r in roles} == {"mp-modelplane-operator", "mp-modelplane-router"}
    for role in roles:
        for rule in role["rules"]:
            where = f"{role['metadata']['name']}: {rule}"
            assert "*" not in rule["apiGroups"], where
            assert "*" not in rule["resources"], where
            assert not FORBIDDEN_VERBS & set(rule["verbs"]), where
            assert "secrets" not in rule["resources"], where
            assert not any(
                r.endswith(("/exec", "/attach", "/portforward", "/proxy")) for r in rule["resources"]
            ), where
            assert "nonResourceURLs" not in rule, where
    bindings = [d for d in manifests if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    for binding in bindings:
        assert binding["roleRef"]["name"] != "cluster-admin"
        assert [s["kind"] for s in binding["subjects"]] == ["ServiceAccount"]
    accounts = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "ServiceAccount"}
    assert all(a["automountServiceAccountToken"] is False for a in accounts.values())
    mounts = {name: spec["automountServiceAccountToken"] for name, spec in pod_specs(manifests).items()}
    assert mounts == {
        "mp-modelplane-operator": True,
        "mp-modelplane-registry": False,
        "mp-modelplane-router": True,
    }


def test_images_are_tagged_with_the_app_version(manifests: list[dict[str, Any]]) -> None:
    app_version = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())["appVersion"]
    assert {c["image"] for c in containers(manifests)} == {f"ghcr.io/modelplane/modelplane:{app_version}"}
    operator = next(c for c in containers(manifests) if c["name"] == "operator")
    assert f"--runtime-image=ghcr.io/modelplane/runtime:{app_version}" in operator["args"]
    pinned = chart.template("image.tag=1.2.3", "operator.runtimeImage.tag=1.2.3-cuda")
    assert {c["image"] for c in containers(pinned)} == {"ghcr.io/modelplane/modelplane:1.2.3"}
    assert "--runtime-image=ghcr.io/modelplane/runtime:1.2.3-cuda" in containers(pinned)[0]["args"]


def _subcommand(argv: list[str]) -> tuple[list[str], Any]:
    """The CLI words of ``argv`` (up to the first option) and the (click) command they name."""
    command: Any = typer.main.get_command(app)
    words: list[str] = []
    for word in argv:
        if word.startswith("-") or not hasattr(command, "commands"):
            break
        sub = command.commands.get(word)
        assert sub is not None, f"`modelplane {' '.join([*words, word])}` does not exist"
        command, words = sub, [*words, word]
    return words, command


@pytest.mark.parametrize(
    "sets",
    [(), ("registry.database.type=postgresql", "registry.database.existingSecret=db", "registry.replicas=2")],
    ids=["sqlite", "postgresql"],
)
def test_every_command_the_chart_runs_exists_in_the_cli(sets: tuple[str, ...]) -> None:
    docs = chart.template(
        *EVERYTHING, "registry.maxArtifactBytes=1000", "registry.auth.anonymousRead=true", *sets
    )
    modelplane = str(Path(sys.executable).parent / "modelplane")
    seen = set()
    for c in containers(docs):
        assert c["command"] == ["modelplane"]
        words, command = _subcommand(c["args"])
        known = {opt for p in command.params for opt in [*p.opts, *p.secondary_opts]}
        for arg in c["args"][len(words) :]:
            assert arg.split("=", 1)[0] in known, f"`modelplane {' '.join(words)}` has no option {arg}"
        if " ".join(words) not in seen:
            result = subprocess.run(
                [modelplane, *words, "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env={**os.environ, "COLUMNS": "200"},
            )
            assert result.returncode == 0, result.stderr
        seen.add(" ".join(words))
    assert seen == {"operator", "registry serve", "router"}


def test_schema_rejects_a_wrong_type_with_the_key_and_types() -> None:
    result = chart.helm("template", "mp", str(chart.CHART), "--set", "router.replicas=two")
    assert result.returncode != 0
    assert "at '/router/replicas': got string, want integer" in result.stderr


def test_schema_rejects_an_unknown_key_and_a_bad_enum() -> None:
    typo = chart.helm("template", "mp", str(chart.CHART), "--set", "operator.replica=3")
    assert typo.returncode != 0
    assert "additional properties 'replica' not allowed" in typo.stderr
    enum = chart.helm("template", "mp", str(chart.CHART), "--set", "registry.database.type=mysql")
    assert enum.returncode != 0
    assert "/registry/database/type" in enum.stderr


def test_sqlite_with_two_registries_is_refused_with_the_fix() -> None:
    result = chart.helm("template", "mp", str(chart.CHART), "--set", "registry.replicas=2")
    assert result.returncode != 0
    assert "registry.database.type=postgresql" in result.stderr


def test_postgresql_takes_the_dsn_from_the_secret_and_keeps_artifacts_on_the_claim() -> None:
    docs = chart.template("registry.database.type=postgresql", "registry.database.existingSecret=db")
    registry = next(c for c in containers(docs) if c["name"] == "registry")
    assert not any(a.startswith("--database-url") for a in registry["args"])
    env = {e["name"]: e for e in registry["env"]}
    assert env["MODELPLANE_REGISTRY_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "db",
        "key": "url",
    }
    deployment = next(d for d in docs if d["kind"] == "Deployment" and "registry" in d["metadata"]["name"])
    assert "strategy" not in deployment["spec"]
    missing = chart.helm("template", "mp", str(chart.CHART), "--set", "registry.database.type=postgresql")
    assert missing.returncode != 0
    assert "registry.database.existingSecret" in missing.stderr


def test_sqlite_default_keeps_the_database_and_artifacts_on_the_claim(
    manifests: list[dict[str, Any]],
) -> None:
    registry = next(c for c in containers(manifests) if c["name"] == "registry")
    assert "--database-url=sqlite:////var/lib/modelplane/registry.db" in registry["args"]
    assert "--artifact-root=/var/lib/modelplane/artifacts" in registry["args"]
    spec = pod_specs(manifests)["mp-modelplane-registry"]
    data = next(v for v in spec["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == "mp-modelplane-registry"
    deployment = next(
        d for d in manifests if d["kind"] == "Deployment" and "registry" in d["metadata"]["name"]
    )
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
