"""The processes of one local replica: what a serving pod's containers run, as commands (pure).

A tensor model: ``modelplane runtime`` on the repository the supervisor wrote (its config.pbtxt
names the artifact, which the runtime downloads into the shared cache). A causal language model,
as the operator's pod runs it: ``modelplane prepare-model --manifest-url`` first (the init
container: every file of the directory downloaded and checked against the resolved digest), then
``modelplane llm-runtime`` on the directory with the engine flags the operator gives the pod
(:func:`modelplane.operator.children.engine_args`, plus the spec's ``runtime.args``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from modelplane.api.v1alpha1 import ModelDeploymentSpec
from modelplane.operator.children import engine_args, quantity_bytes
from modelplane.resolution.resolver import ServedVersion


def llm_runtime_args(spec: ModelDeploymentSpec, served: ServedVersion, drain_timeout_s: float) -> list[str]:
    """The flags of ``modelplane llm-runtime`` for this deployment, ports and directory aside."""
    llm = spec.llm
    args = ["--drain-timeout", f"{drain_timeout_s:g}"]
    if llm.kv_cache_bytes is not None:
        args += ["--kv-cache-bytes", str(quantity_bytes(llm.kv_cache_bytes))]
    if llm.quantization != "none":
        args += ["--quantization", llm.quantization]
    return [*args, *engine_args(spec, served), *spec.runtime.args]


def revision(spec: ModelDeploymentSpec, served: ServedVersion, drain_timeout_s: float) -> str:
    """Changes whenever the replicas must restart: the tensor model's configuration (which names
    its artifact), or the language model's files and engine flags."""
    if served.kind == "generative":
        parts = [served.artifact_uri, served.sha256 or "", *llm_runtime_args(spec, served, drain_timeout_s)]
        text = "\n".join(parts)
    else:
        text = served.config_pbtxt
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def model_directory(repository: Path, served: ServedVersion) -> Path:
    """Where a language model's files go in a revision's repository (as in the pod: NAME/VERSION)."""
    return repository / served.model_name / str(served.version or 1)


def replica_commands(
    spec: ModelDeploymentSpec,
    served: ServedVersion,
    repository: Path,
    *,
    http_port: int,
    grpc_port: int | None,
    cache_dir: Path,
    drain_timeout_s: float,
) -> list[list[str]]:
    """The ``modelplane`` subcommands one replica runs, in order (each after the previous exits 0)."""
    if served.kind == "generative":
        version = str(served.version or 1)
        prepare = [
            "prepare-model",
            "--model-repository", str(repository),
            "--name", served.model_name,
            "--version", version,
            "--manifest-url", served.artifact_uri,
            "--digest", f"sha256:{served.sha256}",
        ]  # fmt: skip
        serve = [
            "llm-runtime", str(model_directory(repository, served)),
            "--host", "127.0.0.1",
            "--port", str(http_port),
            *llm_runtime_args(spec, served, drain_timeout_s),
        ]  # fmt: skip
        return [prepare, serve]
    if grpc_port is None:
        raise ValueError("the V2 runtime of a tensor model needs a gRPC port")
    return [
        [
            "runtime",
            "--model-repository", str(repository),
            "--host", "127.0.0.1",
            "--http-port", str(http_port),
            "--grpc-port", str(grpc_port),
            "--cache-dir", str(cache_dir),
            "--drain-timeout", str(drain_timeout_s),
        ]
    ]  # fmt: skip
