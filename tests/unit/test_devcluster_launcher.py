"""The launcher's checks that need no binaries: node mixes, build recipes, clear errors."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelplane.cli.main import app
from modelplane.devcluster import build, cluster, nodes


def test_default_mix_has_h100s_a100s_and_a_cpu_node() -> None:
    specs = nodes.parse_mix(nodes.DEFAULT_MIX)
    assert [(s.name, s.gpus) for s in specs] == [
        ("gpu-h100-0", 1),
        ("gpu-h100-1", 1),
        ("gpu-a100-0", 4),
        ("cpu-0", 0),
    ]
    labels = nodes.node_labels(specs[2])
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert labels["nvidia.com/gpu.count"] == "4"
    assert labels["nvidia.com/gpu.memory"] == "81920"
    assert nodes.capacity(specs[2])["nvidia.com/gpu"] == "4"
    assert "nvidia.com/gpu" not in nodes.capacity(specs[3])
    assert "nvidia.com/gpu.product" not in nodes.node_labels(specs[3])


def test_gpu_taint_applies_to_gpu_nodes_only() -> None:
    specs = nodes.parse_mix("l4:2,cpu", gpu_taint=True)
    assert nodes.node_object(specs[0])["spec"]["taints"] == [nodes.GPU_TAINT]
    assert "taints" not in nodes.node_object(specs[1])["spec"]


@pytest.mark.parametrize("mix", ["", "b200:1", "h100:x", "h100:1*0", "cpu*many"])
def test_bad_mixes_are_refused_with_the_syntax(mix: str) -> None:
    with pytest.raises(nodes.MixError):
        nodes.parse_mix(mix)


def test_recipe_changes_with_patch_and_flags_and_missing_binaries_are_reported(tmp_path: Path) -> None:
    k8s = build.kubernetes_component("v1.34.4")
    apiserver, kubectl = k8s.binaries[0], k8s.binaries[3]
    assert k8s.recipe(apiserver) != k8s.recipe(kubectl)
    assert build.kubernetes_component("v1.34.3").recipe(kubectl) != k8s.recipe(kubectl)
    assert "k8s.io/client-go => k8s.io/client-go v0.34.4" in k8s.go_mod
    assert len(build.missing([k8s], tmp_path)) == 4
    out = build.binary_path(k8s, "kubectl", tmp_path)
    out.parent.mkdir(parents=True)
    out.write_text("binary")
    assert len(build.missing([k8s], tmp_path)) == 4  # no recipe stamp: not trusted
    (out.parent / ".kubectl.recipe").write_text(k8s.recipe(kubectl) + "\n")
    assert len(build.missing([k8s], tmp_path)) == 3
    with pytest.raises(build.BuildError, match="dev-cluster build"):
        build.bin_dirs([k8s], tmp_path)


def test_patch_that_no_longer_applies_is_an_error() -> None:
    patch = build.LOOPBACK_ENDPOINTS
    source = "func f() {\n" + patch.old + "}\n"
    assert patch.old not in build.apply_patch(source, patch)
    with pytest.raises(build.BuildError, match="no longer applies"):
        build.apply_patch("func f() {}\n", patch)


def test_missing_go_toolchain_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(build.BuildError, match="install Go"):
        build.find_go()


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(cluster.ClusterError, match=rf"Port {port}.*in use"):
            cluster.check_port_free(port, "the API server")


def test_stale_state_dir_is_refused_and_left_untouched(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    state.mkdir()
    record = {"apiserver_port": 1, "etcd_port": 2, "pids": {"etcd": 999999999}, "nodes": []}
    (state / "cluster.json").write_text(json.dumps(record))
    with pytest.raises(cluster.ClusterError, match=r"stale.*dev-cluster down"):
        cluster.up(state)
    assert json.loads((state / "cluster.json").read_text()) == record


def test_cli_reports_no_cluster_and_bad_mix(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["dev-cluster", "kubeconfig", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    result = runner.invoke(app, ["dev-cluster", "status", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "no dev cluster" in result.output
    result = runner.invoke(
        app, ["dev-cluster", "up", "--state-dir", str(tmp_path / "x"), "--nodes", "b200:1"]
    )
    assert result.exit_code == 1
    assert "unknown GPU product" in result.output
    assert not (tmp_path / "x").exists()
