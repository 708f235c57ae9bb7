"""A causal language model from the registry to the engine, as a serving pod gets it.

A model directory is uploaded to a real registry, resolved the way the operator resolves it, and
fetched by ``modelplane prepare-model --manifest-url`` (the pod's init container) with a read
token; the engine then serves what was fetched. A file list that does not hash to the digest the
operator resolved is refused.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelplane.api.v1alpha1 import ModelSource
from modelplane.registry_client.manifest import scan_directory
from modelplane.resolution.registry import RegistryResolver
from modelplane.resolution.resolver import ResolutionError, ServingOptions
from modelplane.serving.runtime.generative.config import EngineConfig
from modelplane.serving.runtime.generative.engine import LLMEngine
from modelplane.serving.runtime.generative.types import SamplingParams
from modelplane.testing.generative import make_tiny_llama_dir
from modelplane.testing.registry import RegistryProcess

OPTIONS = ServingOptions(max_batch_size=8, max_latency_ms=1.0, gpus=0)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    base = tmp_path_factory.mktemp("registry")
    server = RegistryProcess(f"sqlite:///{base / 'r.db'}", base / "artifacts", base / "registry.log").start()
    try:
        yield server
    finally:
        server.stop()


def _prepare(repository: Path, url: str, digest: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "modelplane",
            "prepare-model",
            "--model-repository",
            str(repository),
            "--name",
            "chat",
            "--version",
            "1",
            "--manifest-url",
            url,
            "--digest",
            digest,
        ],
        env={**os.environ, "MODELPLANE_ARTIFACT_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_registered_model_directory_is_fetched_checked_and_served(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    model_dir = make_tiny_llama_dir(tmp_path / "built")
    with registry.client() as client:
        client.create_model("chat")
        client.create_version("chat", format="hf-causal-lm", task="text-generation")
        client.upload_directory("chat", 1, model_dir)
        reader = client.create_token("pods", scopes=["read"]).token

    resolver = RegistryResolver(registry.url, reader)
    resolved = asyncio.run(resolver.resolve("chat", ModelSource(version=1), "stable", OPTIONS))
    served = resolved.served
    assert served.kind == "generative"
    assert served.artifact_uri.endswith("/api/v1/models/chat/versions/1/files")
    assert served.config_pbtxt == ""
    assert "causal language model" in resolved.description

    repository = tmp_path / "models"
    digest = f"sha256:{served.sha256}"
    fetched = _prepare(repository, served.artifact_uri, digest, reader)
    assert fetched.returncode == 0, fetched.stderr
    dest = repository / "chat" / "1"
    assert scan_directory(dest) == scan_directory(model_dir)
    again = _prepare(repository, served.artifact_uri, digest, reader)  # a restarted init container
    assert again.returncode == 0, again.stderr

    engine = LLMEngine(EngineConfig(model_dir=str(dest), model_name="chat", kv_cache_bytes=4 << 20))
    engine.start()
    try:
        engine.wait_ready(60)

        async def generate() -> int:
            prompt = engine.tokenizer.encode("the registry")
            produced = 0
            async for out in engine.generate("r1", prompt, SamplingParams(max_tokens=5, temperature=0)):
                produced = out.completion_tokens
            return produced

        assert asyncio.run(generate()) == 5
    finally:
        engine.stop()


def test_a_file_list_that_does_not_hash_to_the_resolved_digest_is_refused(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    model_dir = make_tiny_llama_dir(tmp_path / "built")
    with registry.client() as client:
        client.create_model("chat2")
        client.create_version("chat2", format="hf-causal-lm", task="text-generation")
        client.upload_directory("chat2", 1, model_dir)
    url = f"{registry.url}/api/v1/models/chat2/versions/1/files"
    refused = _prepare(tmp_path / "models", url, "sha256:" + "0" * 64, "test-admin-token-0123456789abcdef")
    assert refused.returncode == 1
    assert "expected sha256:" + "0" * 64 in refused.stderr
    assert not (tmp_path / "models" / "chat" / "1" / "model.safetensors").exists()


def test_a_language_model_uploaded_as_one_file_is_not_servable(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\0" * 64)
    with registry.client() as client:
        client.create_model("chat3")
        client.create_version("chat3", format="hf-causal-lm")
        client.upload_artifact("chat3", 1, weights)
    resolver = RegistryResolver(registry.url, "test-admin-token-0123456789abcdef")
    with pytest.raises(ResolutionError) as caught:
        asyncio.run(resolver.resolve("chat3", ModelSource(version=1), "stable", OPTIONS))
    assert caught.value.reason == "ArtifactNotDirectory"
    assert not caught.value.temporary
