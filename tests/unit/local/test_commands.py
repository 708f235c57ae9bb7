"""A local replica runs what a serving pod runs: the same commands, the same engine flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from modelplane.api.v1alpha1 import ModelDeploymentSpec
from modelplane.local.commands import model_directory, replica_commands, revision
from modelplane.operator.children import OperatorSettings, generative_containers
from modelplane.resolution.resolver import ServedVersion

CHAT = ServedVersion(
    "stable", "demo-chat", 3, "http://127.0.0.1:9/api/v1/models/demo-chat/versions/3/files", "ab" * 32, "",
    "generative",
)  # fmt: skip
TENSOR = ServedVersion("stable", "demo", 1, "http://127.0.0.1:9/artifact", "cd" * 32, "name: 'demo'\n")


def _spec(**llm: object) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {"model": {"name": "demo-chat", "alias": "production"}, "batching": {"maxBatchSize": 8}, "llm": llm}
    )


def test_a_language_model_is_fetched_then_served_by_llm_runtime(tmp_path: Path) -> None:
    spec = _spec(maxModelLen=512, kvCacheBytes="16Mi")
    prepare, serve = replica_commands(
        spec, CHAT, tmp_path, http_port=1234, grpc_port=None, cache_dir=tmp_path / "c", drain_timeout_s=10
    )
    assert prepare == [
        "prepare-model", "--model-repository", str(tmp_path), "--name", "demo-chat", "--version", "3",
        "--manifest-url", CHAT.artifact_uri, "--digest", "sha256:" + "ab" * 32,
    ]  # fmt: skip
    assert serve[:6] == [
        "llm-runtime",
        str(tmp_path / "demo-chat" / "3"),
        "--host",
        "127.0.0.1",
        "--port",
        "1234",
    ]
    assert model_directory(tmp_path, CHAT) == tmp_path / "demo-chat" / "3"
    flags = dict(zip(serve[6::2], serve[7::2], strict=False))
    assert flags["--served-model-name"] == "demo-chat"
    assert flags["--max-num-seqs"] == "8"
    assert flags["--max-model-len"] == "512"
    assert flags["--kv-cache-bytes"] == str(16 * 1024 * 1024)
    assert flags["--drain-timeout"] == "10"


def test_the_engine_flags_are_the_operators(tmp_path: Path) -> None:
    spec = _spec(maxModelLen=256, quantization="int8", enablePrefixCaching=False)
    _, serve = replica_commands(
        spec, CHAT, tmp_path, http_port=1, grpc_port=None, cache_dir=tmp_path, drain_timeout_s=30
    )
    _, [container] = generative_containers(spec, CHAT, OperatorSettings())
    pod = list(container["args"])
    # The pod's flags after its port, but its drain delay: locally nothing routes to a stopping
    # replica (the supervisor takes it out of the router's table first).
    delay = pod.index("--drain-delay")
    del pod[delay : delay + 2]
    assert serve[6:] == pod[pod.index("--drain-timeout") :]


def test_a_tensor_model_runs_the_v2_runtime(tmp_path: Path) -> None:
    spec = ModelDeploymentSpec.model_validate({"model": {"name": "demo", "version": 1}})
    [command] = replica_commands(
        spec, TENSOR, tmp_path, http_port=1, grpc_port=2, cache_dir=tmp_path / "cache", drain_timeout_s=10
    )
    assert command[0] == "runtime"
    assert command[command.index("--grpc-port") + 1] == "2"
    with pytest.raises(ValueError, match="gRPC port"):
        replica_commands(
            spec, TENSOR, tmp_path, http_port=1, grpc_port=None, cache_dir=tmp_path, drain_timeout_s=1
        )


def test_the_revision_follows_the_files_and_the_engine_settings() -> None:
    base = revision(_spec(), CHAT, 10)
    assert revision(_spec(), CHAT, 10) == base
    assert revision(_spec(maxModelLen=128), CHAT, 10) != base
    other_files = dataclasses.replace(CHAT, sha256="ef" * 32)
    assert revision(_spec(), other_files, 10) != base
    assert revision(_spec(), TENSOR, 10) != revision(
        _spec(), ServedVersion("stable", "demo", 2, "u", "cd" * 32, "name: 'demo'\nversion: 2\n"), 10
    )
