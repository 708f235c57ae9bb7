"""The operator's RBAC is least privilege: what platform teams check before they install it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
FORBIDDEN_VERBS = {"bind", "escalate", "impersonate", "*"}


def _rules() -> list[dict[str, Any]]:
    docs = list(yaml.safe_load_all((REPO / "deploy/operator/rbac.yaml").read_text()))
    roles = [d for d in docs if d and d["kind"] in ("ClusterRole", "Role")]
    assert roles, "no Role or ClusterRole found"
    return [rule for role in roles for rule in role["rules"]]


def test_no_wildcards_anywhere() -> None:
    for rule in _rules():
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(key, []), rule


def test_no_secrets_access_and_no_privilege_escalation_verbs() -> None:
    for rule in _rules():
        assert "secrets" not in rule.get("resources", []), rule
        assert not FORBIDDEN_VERBS & set(rule["verbs"]), rule


def test_pods_are_read_only() -> None:
    pod_rules = [r for r in _rules() if "pods" in r.get("resources", [])]
    assert pod_rules
    for rule in pod_rules:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
