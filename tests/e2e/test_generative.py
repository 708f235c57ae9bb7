"""A causal language model from the registry, deployed by the operator, answering the openai client.

The model directory is uploaded to a real registry; the ModelDeployment names it like any model;
the operator renders a pod whose init container fetches and checks every file and whose runtime is
the generative engine; the official ``openai`` client streams from the pod.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from modelplane.testing.cluster import Cluster, wait_for
from modelplane.testing.generative import make_tiny_llama_dir
from modelplane.testing.modeldeployments import condition, md_manifest, serving_pods, wait_ready
from modelplane.testing.operator import ARTIFACT_SECRET, OperatorProcess
from modelplane.testing.registry import RegistryProcess
from modelplane.testing.router import RouterProcess
from modelplane.testing.serving_fixtures import running_operator

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def chat_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryProcess, str]]:
    """A registry holding model ``chat`` version 1, a tiny Llama directory; and a read token."""
    base = tmp_path_factory.mktemp("chat-registry")
    server = RegistryProcess(f"sqlite:///{base / 'r.db'}", base / "artifacts", base / "registry.log").start()
    try:
        with server.client() as client:
            client.create_model("chat")
            client.create_version("chat", format="hf-causal-lm", task="text-generation")
            client.upload_directory("chat", 1, make_tiny_llama_dir(base / "model"))
            token = client.create_token("pods", scopes=["read"]).token
        yield server, token
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chat_operator(
    cluster_session: Cluster,
    crds: None,
    chat_registry: tuple[RegistryProcess, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    server, _ = chat_registry
    with running_operator(cluster_session, server, tmp_path_factory.mktemp("operator")) as process:
        yield process


def test_a_language_model_becomes_ready_and_streams_to_the_openai_client(
    cluster: Cluster,
    namespace: str,
    chat_registry: tuple[RegistryProcess, str],
    chat_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    _, token = chat_registry
    cluster.kubectl(
        "create", "secret", "generic", ARTIFACT_SECRET, "-n", namespace, f"--from-literal=token={token}"
    )
    spec = {
        "model": {"name": "chat", "version": 1},
        "batching": {"maxBatchSize": 8},
        "llm": {"kvCacheBytes": "16Mi"},
    }
    cluster.apply(md_manifest("chat", spec), namespace)
    md = wait_ready(cluster, namespace, "chat", 1, timeout=240)
    assert "causal language model" in condition(md, "ModelResolved")["message"]
    (pod,) = serving_pods(cluster, namespace, "chat")
    assert pod["metadata"]["labels"]["modelplane.io/api"] == "openai"

    client = openai.OpenAI(
        base_url=f"http://{pod['status']['podIP']}:8000/v1", api_key="unused", max_retries=0
    )
    assert [m.id for m in client.models.list().data] == ["chat"]
    chunks = list(
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "what does the operator do?"}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens >= 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    # Through the router, which finds the pod from its EndpointSlice and speaks OpenAI's API to it.
    router = RouterProcess(
        log_path=tmp_path / "router.log",
        discovery="kubernetes",
        extra_args=["--default-namespace", namespace, "--drain-timeout", "2"],
        env={"KUBECONFIG": str(cluster.kubeconfig)},
    ).start()
    try:
        routed = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
        wait_for("chat routable", lambda: [m.id for m in routed.models.list().data] == ["chat"], timeout=60)
        stream = routed.completions.create(model="chat", prompt="the router", max_tokens=8, stream=True)
        pieces = [chunk for chunk in stream]
        assert pieces[-1].choices[0].finish_reason in ("length", "stop")
        assert all(p.model == "chat" for p in pieces)
    finally:
        router.stop()
