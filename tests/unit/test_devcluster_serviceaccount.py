"""The node agent hands pods their ServiceAccount credentials and maps option and URL paths to volumes."""

from __future__ import annotations

from pathlib import Path

import yaml

from modelplane.devcluster.agent import serviceaccount
from modelplane.devcluster.agent.downward import remap_mount_paths

POD = {"metadata": {"name": "op-1", "uid": "u-1", "namespace": "ns"}, "spec": {"serviceAccountName": "op"}}
INJECTED = {
    "name": "kube-api-access-abcde",
    "projected": {
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        ]
    },
}


def test_token_request_is_bound_to_the_pod_with_the_sources_lifetime() -> None:
    source = serviceaccount.token_source(INJECTED)
    assert source is not None
    request = serviceaccount.token_request(POD, source)
    assert request["spec"]["expirationSeconds"] == 3607
    assert request["spec"]["boundObjectRef"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "op-1",
        "uid": "u-1",
    }
    assert "audiences" not in request["spec"]
    with_audience = serviceaccount.token_request(POD, {"audience": "vault"})
    assert with_audience["spec"]["audiences"] == ["vault"]
    assert with_audience["spec"]["expirationSeconds"] == serviceaccount.DEFAULT_EXPIRATION


def test_only_projected_token_volumes_count() -> None:
    assert serviceaccount.token_source({"name": "tmp", "emptyDir": {}}) is None
    assert serviceaccount.token_source({"name": "cm", "projected": {"sources": [{"configMap": {}}]}}) is None


def test_kubeconfig_reads_the_token_file(tmp_path: Path) -> None:
    text = serviceaccount.kubeconfig("https://127.0.0.1:6443", tmp_path / "ca.crt", tmp_path / "token", "ns")
    config = yaml.safe_load(text)
    assert config["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:6443",
        "certificate-authority": str(tmp_path / "ca.crt"),
    }
    assert config["users"][0]["user"] == {"tokenFile": str(tmp_path / "token")}
    assert config["contexts"][0]["context"]["namespace"] == "ns"


def test_file_urls_reach_the_volume_directory() -> None:
    mounts = {"/var/lib/modelplane": "/state/pod/volumes/data"}
    assert (
        remap_mount_paths("sqlite:////var/lib/modelplane/registry.db", mounts)
        == "sqlite:////state/pod/volumes/data/registry.db"
    )
    assert remap_mount_paths("file:///var/lib/modelplane/x", mounts) == "file:///state/pod/volumes/data/x"
    assert remap_mount_paths("http://var/lib/modelplane", mounts) == "http://var/lib/modelplane"
    assert remap_mount_paths("sqlite:////other/registry.db", mounts) == "sqlite:////other/registry.db"
    assert remap_mount_paths("postgresql://u@h/db", mounts) == "postgresql://u@h/db"


def test_option_values_in_one_word_reach_the_volume_directory() -> None:
    mounts = {"/var/lib/modelplane": "/state/pod/volumes/data"}
    assert (
        remap_mount_paths("--artifact-root=/var/lib/modelplane/artifacts", mounts)
        == "--artifact-root=/state/pod/volumes/data/artifacts"
    )
    assert (
        remap_mount_paths("--database-url=sqlite:////var/lib/modelplane/registry.db", mounts)
        == "--database-url=sqlite:////state/pod/volumes/data/registry.db"
    )
    assert remap_mount_paths("--host=$(POD_IP)", mounts) == "--host=$(POD_IP)"
    assert remap_mount_paths("--root=/elsewhere", mounts) == "--root=/elsewhere"
